"""finpredict monitor service."""
