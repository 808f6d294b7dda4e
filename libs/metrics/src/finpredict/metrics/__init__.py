"""Model-quality metrics, one implementation each (used by the pipeline, the monitor and the rollout analysis)."""
