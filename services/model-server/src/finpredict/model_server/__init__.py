"""finpredict model_server service."""
