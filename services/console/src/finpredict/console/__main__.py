"""``finpredict-console`` / ``python -m finpredict.console``: runs the web console."""

from __future__ import annotations

import asyncio
import sys

from finpredict.common.config import ConfigError, load_settings
from finpredict.common.logging import configure_logging
from finpredict.common.telemetry import configure_tracing
from finpredict.console.config import ConsoleSettings
from finpredict.console.server import serve


def main() -> None:
    try:
        settings = load_settings(ConsoleSettings)
    except ConfigError as exc:
        sys.exit(f"finpredict-console: {exc}")
    configure_logging("console", settings.log_level, settings.log_format)
    configure_tracing("console", settings.otlp_endpoint)
    try:
        asyncio.run(serve(settings))
    except ConfigError as exc:
        sys.exit(f"finpredict-console: {exc}")


if __name__ == "__main__":
    main()
