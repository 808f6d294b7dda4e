"""Test harnesses for finpredict (a dev-only workspace member: no service or image depends on it)."""
