"""The web UI: static files shipped inside the package, served under ``/ui``.

The UI is plain HTML, CSS and JavaScript modules (no build step, nothing loaded from the
network); it talks only to the JSON API under ``/api``. :func:`ui_routes` returns the routes
to pass to :func:`~evflow.http.server.create_app`:

* ``GET /`` — redirects to ``/ui/``;
* ``GET /ui`` — redirects to ``/ui/``;
* ``GET /ui/`` and ``/ui/index.html`` — the single page (hash routing: ``#/runs``, ...);
* ``GET /ui/<module>.js``, ``/ui/style.css`` — its script modules and style sheet;
* ``GET /ui/vendor/...`` — the libraries it uses, vendored minified with their licences
  (``scripts/vendor-ui`` rebuilds them from pinned, checksummed npm packages).

Only these files are served (never the package's Python sources). Each answer carries a
Content-Security-Policy that allows nothing but this origin, so the page works offline and an
injected script cannot run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ...engine import Engine

__all__ = ["UI_DIR", "ui_routes"]

UI_DIR = Path(__file__).resolve().parent

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
# The page's files, found once: relative path -> media type.
_FILES: dict[str, str] = {
    p.relative_to(UI_DIR).as_posix(): _TYPES[p.suffix]
    for p in sorted(UI_DIR.rglob("*"))
    if p.is_file() and p.suffix in _TYPES
}

_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
}


def ui_routes(engine: Engine) -> list[BaseRoute]:
    """The routes serving the web UI for ``engine`` (its data comes from ``/api``)."""
    del engine  # the page reads everything through the JSON API

    async def to_ui(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    def serve(filename: str) -> Callable[[Request], Awaitable[Response]]:
        path = UI_DIR / filename
        media_type = _FILES[filename]

        async def endpoint(request: Request) -> Response:
            return FileResponse(path, media_type=media_type, headers=_HEADERS)

        return endpoint

    routes: list[BaseRoute] = [
        Route("/", to_ui, methods=["GET", "HEAD"]),
        Route("/ui", to_ui, methods=["GET", "HEAD"]),
        Route("/ui/", serve("index.html"), methods=["GET", "HEAD"]),
    ]
    routes += [Route(f"/ui/{name}", serve(name), methods=["GET", "HEAD"]) for name in _FILES]
    return routes
