"""``finpredict-registry`` / ``python -m finpredict.registry``: runs the registry service."""

from __future__ import annotations

import sys

from finpredict.common.config import ConfigError, load_settings
from finpredict.common.server import run_service
from finpredict.registry.config import RegistrySettings
from finpredict.registry.server import bindings


def main() -> None:
    try:
        settings = load_settings(RegistrySettings)
    except ConfigError as exc:
        sys.exit(f"finpredict-registry: {exc}")
    run_service("registry", settings, bindings())


if __name__ == "__main__":
    main()
