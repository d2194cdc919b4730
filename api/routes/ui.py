"""The web page (``/ui``): plain HTML, CSS and JavaScript from ``api/ui/``, no build step, no other origin.

The page talks to the API only through its public HTTP routes, with the key the person types (kept in
the tab's session storage, sent as ``Authorization: Bearer``). Results are fetched through
``GET /v1/jobs/{id}/result/content`` on this same origin and shown as ``blob:`` URLs, so the page
needs no S3 origin in its Content-Security-Policy: it connects to ``'self'`` only.

The files are read once, at import, from the package (``importlib.resources``: a non-editable
install ships them as package data), and answered with a strict CSP, ``nosniff``, no referrer and no
framing. ``/`` redirects to ``/ui``.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from maskq.errors import NotFoundError

router = APIRouter(include_in_schema=False)

# Everything from this origin only; images may also be blob: (the chosen photos, the fetched results)
# and data: (the empty favicon). No inline script or style: there is none in the files. Trusted Types
# forbids string-to-HTML sinks (innerHTML), so text from the API can only ever become text.
CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data:",
    "connect-src 'self'",
    "font-src 'none'",
    "object-src 'none'",
    "media-src 'none'",
    "frame-src 'none'",
    "worker-src 'none'",
    "manifest-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
    "require-trusted-types-for 'script'",
    "trusted-types 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # revalidate every time (an upgraded server serves the new page), answered 304 by the ETag
    "Cache-Control": "no-cache",
}
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8"}
FILES = ("index.html", "app.js", "app.css")


def _load() -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, media type, ETag) of every file the page is made of."""
    root = resources.files("api") / "ui"
    out = {}
    for name in FILES:
        data = (root / name).read_bytes()
        out[name] = (data, MEDIA_TYPES["." + name.rsplit(".", 1)[1]], '"' + hashlib.sha256(data).hexdigest()[:32] + '"')
    return out


ASSETS = _load()


def _answer(request: Request, name: str) -> Response:
    data, media_type, etag = ASSETS[name]
    headers = {**SECURITY_HEADERS, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
async def page(request: Request) -> Response:
    return _answer(request, "index.html")


@router.get("/ui/{name}")
async def asset(request: Request, name: str) -> Response:
    if name not in ASSETS or name == "index.html":
        raise NotFoundError(f"no file {name!r} in the page")
    return _answer(request, name)
