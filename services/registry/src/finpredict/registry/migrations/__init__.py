"""Alembic migrations of the registry database (run programmatically by ``finpredict.registry.db``)."""
