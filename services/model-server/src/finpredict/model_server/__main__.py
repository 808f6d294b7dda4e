"""``finpredict-model-server`` / ``python -m finpredict.model_server``: runs the model server.

Starts (or connects to) Ray, deploys the Serve application of ``serve_config.yaml`` with its gRPC
ingress, and serves health/reflection/metrics on the control port until SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import sys

# Set before Ray is imported (it reads these at import time). Under `uv run`, Ray would otherwise
# re-create the driver's uv project in every worker (uploading the tree and rebuilding the Rust
# extension per worker): the workers use this interpreter's environment as it is.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

from finpredict.common.config import ConfigError, load_settings
from finpredict.common.logging import configure_logging
from finpredict.common.telemetry import configure_tracing
from finpredict.model_server.config import ModelServerSettings
from finpredict.model_server.server import ModelServerRunner, bindings


def main() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's C++ failure-signal handler would turn SIGTERM into an abort (exit 134) of this
    # supervisor; SIGTERM here means "drain", handled by the skeleton.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        settings = load_settings(ModelServerSettings)
    except ConfigError as exc:
        sys.exit(f"finpredict-model-server: {exc}")
    if not settings.serve_config.is_file():
        sys.exit(
            "finpredict-model-server: "
            f"FINPREDICT_MODEL_SERVER_SERVE_CONFIG={settings.serve_config}: not found"
        )
    configure_logging("model-server", settings.log_level, settings.log_format)
    configure_tracing("model-server", settings.otlp_endpoint)
    runner = ModelServerRunner("model-server", settings, bindings())
    asyncio.run(runner.run())


if __name__ == "__main__":
    main()
