"""Alembic migrations of the gateway's shared state (run by ``finpredict.gateway.state.db.migrate``)."""
