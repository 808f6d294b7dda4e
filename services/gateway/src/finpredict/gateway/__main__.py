"""``finpredict-gateway`` / ``python -m finpredict.gateway``: runs the gateway."""

from __future__ import annotations

import sys

from finpredict.common.config import ConfigError, load_settings
from finpredict.common.server import run_service
from finpredict.gateway.config import GatewaySettings
from finpredict.gateway.server import Gateway


def main() -> None:
    try:
        settings = load_settings(GatewaySettings)
        gateway = Gateway(settings)
    except ConfigError as exc:
        sys.exit(f"finpredict-gateway: {exc}")
    run_service(
        "gateway",
        settings,
        gateway.bindings(),
        interceptors=gateway.interceptors,
        on_start=[gateway.open],
        on_drain=[gateway.drain],
        on_shutdown=[gateway.close],
    )


if __name__ == "__main__":
    main()
