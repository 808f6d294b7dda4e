"""finpredict registry service."""
