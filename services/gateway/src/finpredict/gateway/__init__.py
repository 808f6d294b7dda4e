"""finpredict gateway service."""
