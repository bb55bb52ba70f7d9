"""Reference detect service (FastAPI on uvicorn, dynamic batching): the system under test of ``bench load``.

Same Engine, preprocessing and decision rule as the evaluator, so the service and ``bench eval`` never
disagree on a prediction. ``create_app(ServiceConfig(...))`` for an ASGI app; ``serve(...)`` to run it.
"""

from __future__ import annotations

from typing import Any

from bench.service.config import ServiceConfig

__all__ = ["ServiceConfig", "create_app", "serve"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """See :func:`bench.service.app.create_app` (imported lazily: FastAPI is not needed to build a config)."""
    from bench.service.app import create_app as _create_app

    return _create_app(*args, **kwargs)


def serve(*args: Any, **kwargs: Any) -> None:
    """See :func:`bench.service.server.serve`."""
    from bench.service.server import serve as _serve

    return _serve(*args, **kwargs)
