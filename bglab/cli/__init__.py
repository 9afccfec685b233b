"""The ``bglab`` command: the Typer ``app`` and one module per command, each exposing ``register(app)``."""
