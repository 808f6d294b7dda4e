"""The finpredict training pipeline (DVC stages)."""
