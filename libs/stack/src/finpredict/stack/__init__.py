"""The local platform launcher: ``finpredict up | down | status``."""
