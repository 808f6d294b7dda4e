"""Shared library of the finpredict services: settings, gRPC server skeleton, telemetry, logs."""
