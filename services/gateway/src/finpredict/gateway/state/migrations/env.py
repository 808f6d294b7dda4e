"""Alembic environment: runs migrations on the connection handed over by ``db.migrate``."""

from __future__ import annotations

from alembic import context

from finpredict.gateway.state.db import VERSION_TABLE
from finpredict.gateway.state.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=metadata, render_as_batch=True, version_table=VERSION_TABLE
)
with context.begin_transaction():
    context.run_migrations()
