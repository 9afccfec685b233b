"""HTTP server for bglab (``bglab serve``): a FastAPI app with a JSON API and a small offline web page.

Needs the ``serve`` extra (``pip install 'bglab[serve]'``: fastapi, uvicorn, python-multipart).
"""

from __future__ import annotations

from bglab.serve.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def create_app(settings: ServerSettings | None = None):  # noqa: ANN201 - FastAPI imported lazily
    """Build the FastAPI app (see :func:`bglab.serve.app.create_app`)."""
    from bglab.serve.app import create_app as _create

    return _create(settings)
