"""finpredict web console: models, lineage, rollouts, drift and alerts, decisions, in the browser."""
