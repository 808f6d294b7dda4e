"""``finpredict-registry`` / ``python -m finpredict.registry``: runs the registry service.

``python -m finpredict.registry migrate`` only applies the database migrations and exits.
"""

from __future__ import annotations

import sys

from finpredict.common.config import ConfigError, load_settings
from finpredict.common.logging import configure_logging
from finpredict.common.server import run_service
from finpredict.registry.config import RegistrySettings


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["serve"], ["migrate"]):
        sys.exit("usage: python -m finpredict.registry [serve|migrate]")
    try:
        settings = load_settings(RegistrySettings)
        settings.validate_extra()
    except ConfigError as exc:
        sys.exit(f"finpredict-registry: {exc}")
    if args == ["migrate"]:
        from finpredict.registry.db import create_db_engine, migrate

        configure_logging("registry", settings.log_level, settings.log_format)
        engine = create_db_engine(settings.resolved_database_url())
        migrate(engine)
        engine.dispose()
        return
    from finpredict.registry.server import build

    configure_logging("registry", settings.log_level, settings.log_format)
    try:
        registry = build(settings)
    except ConfigError as exc:
        sys.exit(f"finpredict-registry: {exc}")
    run_service(
        "registry",
        settings,
        registry.bindings,
        registry.interceptors,
        on_shutdown=registry.on_shutdown,
        on_drain=registry.on_drain,
    )


if __name__ == "__main__":
    main()
