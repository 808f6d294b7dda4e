"""``finpredict-monitor`` / ``python -m finpredict.monitor``: runs the monitor service."""

from __future__ import annotations

import sys

from finpredict.common.config import ConfigError, load_settings
from finpredict.common.server import run_service
from finpredict.monitor.config import MonitorSettings
from finpredict.monitor.server import bindings


def main() -> None:
    try:
        settings = load_settings(MonitorSettings)
    except ConfigError as exc:
        sys.exit(f"finpredict-monitor: {exc}")
    run_service("monitor", settings, bindings())


if __name__ == "__main__":
    main()
