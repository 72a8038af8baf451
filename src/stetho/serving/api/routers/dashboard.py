"""The dashboard's mount point: ``GET /``.

:mod:`stetho.serving.dashboard` may define ``router`` (an :class:`fastapi.APIRouter` whose
handlers take the service through :data:`stetho.serving.api.deps.ServiceDep`); it is then
mounted as it is (otherwise ``GET /`` links to the API docs).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ["dashboard_router"]


def dashboard_router() -> APIRouter:
    """The dashboard's router (a page pointing at the API while the dashboard has none)."""
    from stetho.serving import dashboard as page

    own = getattr(page, "router", None)
    if isinstance(own, APIRouter):
        return own
    router = APIRouter(tags=["dashboard"])

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def placeholder() -> HTMLResponse:
        return HTMLResponse(
            "<!DOCTYPE html><title>stetho</title><p>stetho: <a href='/docs'>API</a> · "
            "<a href='/metrics'>metrics</a></p>"
        )

    return router
