"""The gateway's shared routing state: one database every replica uses.

Rollouts, experiments, shadows, decisions and the sticky-assignment salts (a rollout's or an
experiment's id) live in one database: SQLite for a single gateway (the default,
``sqlite:///<data_dir>/gateway.db``), PostgreSQL for many (``DATABASE_URL``). Each replica:

- routes from its in-memory copy, refreshed by :mod:`.sync` within ``STATE_POLL_S`` of a change
  (a polled change counter, :func:`.db.bump_version`); the request path never waits on the
  database, and while the database is lost the last known state keeps routing;
- publishes its measurements of each rollout's current window (:mod:`.windows`), which the
  leader merges for the analysis;
- competes for the controller lease (:mod:`.lease`): exactly one replica runs the analysis, and
  each of its decisions is written only while its fencing token is still the lease's.
"""
