"""Cross-service tests: fixtures shared by the tests in this folder."""
