"""The Serve supervisor: connects to (or starts) Ray, deploys ``serve_config.yaml``, watches the app.

Replicas read the registry token from their own environment
(``FINPREDICT_MODEL_SERVER_REGISTRY_TOKEN``): a local Ray started here inherits this process's
environment; on KubeRay the worker pods get it from a Secret. The token never enters the Serve
config (which Ray stores and shows in its dashboard).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import yaml  # type: ignore[import-untyped]  # (no types-PyYAML in the lock)

from finpredict.common.net import free_port
from finpredict.model_server.config import ModelServerSettings

log = logging.getLogger("finpredict.model_server.driver")


def load_serve_config(settings: ModelServerSettings) -> dict[str, Any]:
    """The Serve config with the settings' overrides (ports, registry target) applied."""
    config: dict[str, Any] = yaml.safe_load(settings.serve_config.read_text())
    if settings.serve_grpc_port >= 0:
        config.setdefault("grpc_options", {})["port"] = settings.serve_grpc_port or free_port()
    if settings.serve_http_port >= 0:
        http = config.setdefault("http_options", {})
        http["port"] = settings.serve_http_port or free_port()
    apps = [a for a in config.get("applications", []) if a.get("name") == settings.app_name]
    if len(apps) != 1:
        raise ValueError(f"{settings.serve_config}: no application named {settings.app_name!r}")
    if settings.registry_target:
        apps[0].setdefault("args", {})["registry_target"] = settings.registry_target
    return config


@dataclass
class ServeDriver:
    settings: ModelServerSettings
    owns_ray: bool = False
    grpc_port: int = 0
    http_port: int = 0

    def start(self) -> None:
        """Connects to Ray (or starts a local one) and deploys the app (does not wait for RUNNING)."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray
        from ray.serve._private import api as serve_api
        from ray.serve.config import gRPCOptions
        from ray.serve.schema import ServeDeploySchema

        s = self.settings
        config = load_serve_config(s)
        schema = ServeDeploySchema.model_validate(config)
        if s.ray_address:
            ray.init(address=s.ray_address, namespace="serve", log_to_driver=False)
        else:
            kwargs: dict[str, Any] = {}
            if s.ray_temp_dir is not None:
                kwargs["_temp_dir"] = str(s.ray_temp_dir)
            ray.init(
                address="local",
                num_cpus=s.ray_num_cpus,
                include_dashboard=False,
                namespace="serve",
                log_to_driver=False,
                **kwargs,
            )
            self.owns_ray = True
        # What `serve run config.yaml` does: start Serve with the config's proxies, then deploy.
        client = serve_api.serve_start(
            http_options=schema.http_options.model_dump(),
            grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
            proxy_location=schema.proxy_location,
        )
        client.deploy_apps(schema, _blocking=False)
        self.grpc_port, self.http_port = self._actual_ports(client, schema)
        log.info(
            "serve app deploying",
            extra={"app": s.app_name, "grpc_port": self.grpc_port, "owns_ray": self.owns_ray},
        )

    @staticmethod
    def _actual_ports(client: Any, schema: Any) -> tuple[int, int]:
        # Serve's proxy options apply only the first time Serve starts in a cluster: report the
        # ports really in use, not the ones we asked for.
        import ray

        try:
            grpc_cfg = ray.get(client._controller.get_grpc_config.remote())
            http_cfg = ray.get(client._controller.get_http_config.remote())
            return int(grpc_cfg.port), int(http_cfg.port)
        except Exception:  # older/newer Serve without these controller methods
            return int(schema.grpc_options.port), int(schema.http_options.port)

    def app_status(self) -> str:
        from ray import serve

        app = serve.status().applications.get(self.settings.app_name)
        return str(getattr(app.status, "value", app.status)) if app is not None else "NOT_DEPLOYED"

    def stop(self) -> None:
        """Deletes the app (shared cluster) or shuts the local Ray down (with everything in it)."""
        import ray
        from ray import serve

        if not ray.is_initialized():
            return
        try:
            if self.owns_ray:
                serve.shutdown()  # type: ignore[no-untyped-call]
            elif self.settings.delete_app_on_exit:
                serve.delete(self.settings.app_name, _blocking=True)
        finally:
            ray.shutdown()
