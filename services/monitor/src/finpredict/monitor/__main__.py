"""``finpredict-monitor`` / ``python -m finpredict.monitor``: runs the monitor service."""

from __future__ import annotations

import sys

from finpredict.common.config import ConfigError, load_settings
from finpredict.common.logging import configure_logging
from finpredict.common.server import run_service
from finpredict.monitor.config import MonitorSettings
from finpredict.monitor.rules import RulesError
from finpredict.monitor.server import bindings, interceptors
from finpredict.monitor.service import MonitorService
from finpredict.monitor.store import StoreReadError


def main() -> None:
    try:
        settings = load_settings(MonitorSettings)
        configure_logging("monitor", settings.log_level, settings.log_format)
        auth = interceptors(settings)
        service = MonitorService(settings)
    except (ConfigError, RulesError, StoreReadError) as exc:
        sys.exit(f"finpredict-monitor: {exc}")
    run_service(
        "monitor",
        settings,
        bindings(service),
        auth,
        on_drain=[service.drain],
        on_shutdown=[service.shutdown],
    )


if __name__ == "__main__":
    main()
