"""The monitoring API (FastAPI): :func:`create_app` over a :class:`~stetho.serving.ScoringService`.

See :mod:`stetho.serving.api.app` for the routes and docs/service.md for the reference.
"""

from stetho.serving.api.app import create_app

__all__ = ["create_app"]
