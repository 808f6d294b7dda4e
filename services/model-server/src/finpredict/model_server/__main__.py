"""``finpredict-model-server`` / ``python -m finpredict.model_server``: runs the model-server service."""

from __future__ import annotations

import sys

from finpredict.common.config import ConfigError, load_settings
from finpredict.common.server import run_service
from finpredict.model_server.config import ModelServerSettings
from finpredict.model_server.server import bindings


def main() -> None:
    try:
        settings = load_settings(ModelServerSettings)
    except ConfigError as exc:
        sys.exit(f"finpredict-model-server: {exc}")
    run_service("model-server", settings, bindings())


if __name__ == "__main__":
    main()
