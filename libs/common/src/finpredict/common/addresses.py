"""The platform's default addresses, defined once.

Every service binds its default port from here, and every client (the CLI, the SDK, the model
server's registry client, the local launcher) defaults to the matching address. A deployment
overrides them through each component's settings.
"""

from __future__ import annotations

LOCALHOST = "127.0.0.1"

GATEWAY_PORT = 50051
REGISTRY_PORT = 50052
MODEL_SERVER_PORT = 50053  # the model server's control port
MONITOR_PORT = 50054
SERVE_GRPC_PORT = 50063  # Ray Serve's gRPC ingress (the model server's data path)
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
CONSOLE_PORT = 8080  # the web console (HTTP)

GATEWAY_ADDRESS = f"{LOCALHOST}:{GATEWAY_PORT}"
REGISTRY_ADDRESS = f"{LOCALHOST}:{REGISTRY_PORT}"
MODEL_SERVER_ADDRESS = f"{LOCALHOST}:{MODEL_SERVER_PORT}"
MONITOR_ADDRESS = f"{LOCALHOST}:{MONITOR_PORT}"
SERVE_GRPC_ADDRESS = f"{LOCALHOST}:{SERVE_GRPC_PORT}"
CONSOLE_URL = f"http://{LOCALHOST}:{CONSOLE_PORT}"
