"""The ``finpredict`` command line."""
