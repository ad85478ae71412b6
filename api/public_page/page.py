"""Routes of the public page: ``/page/`` (the page), its static files, the plotly.js bundle, the VN_AQI scale.

The chart library's JavaScript is the ``plotly.min.js`` inside the ``plotly`` PyPI package, a dependency
that the set-up installs: served from here, never fetched from a CDN (tests and many province networks
are offline). Without it the server refuses to start, naming the set-up step, instead of serving a
page whose charts never appear."""

from __future__ import annotations

import gzip
import importlib.metadata
import threading
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from store import vn_aqi

PAGE_PREFIX = "/page"
STATIC_DIR = Path(__file__).resolve().parent / "static"
BUNDLE_DIST = "plotly"
BUNDLE_FILE = "plotly/package_data/plotly.min.js"
# The bundle's URL carries plotly's version, so a browser may keep it for a year and still get a new one.
LONG_CACHE = {"Cache-Control": "public, max-age=31536000, immutable"}


class BundleMissing(RuntimeError):
    """The charting library's JavaScript is not installed."""


def bundle(dist_name: str = BUNDLE_DIST, file: str = BUNDLE_FILE) -> tuple[Path, str]:
    """The path and version of plotly.js inside the installed ``plotly`` package."""
    hint = "run `bash scripts/bootstrap.sh` (it pip installs the `plotly` package, whose plotly.min.js the page uses)"
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise BundleMissing(
            f"the public page needs the `{dist_name}` package, which is not installed: {hint}"
        ) from None
    path = Path(str(dist.locate_file(file)))
    if not path.is_file():
        raise BundleMissing(f"{path} is missing from the installed `{dist_name}` {dist.version}: {hint}")
    return path, dist.version


def categories() -> list[dict]:
    """Bảng 1 as the page's legend shows it (the same rows /v1 answers name for each AQI)."""
    return [
        {
            "low": c.low,
            "high": c.high,
            "name_vi": c.name_vi,
            "name_en": c.name_en,
            "colour_vi": c.colour_vi,
            "colour_en": c.colour_en,
            "hex": c.hex,
        }
        for c in vn_aqi.CATEGORIES
    ]


def install(app: FastAPI) -> None:
    """Adds the page to ``app``; raises BundleMissing (naming the set-up step) if plotly.js is not installed."""
    bundle_path, bundle_version = bundle()
    index = (STATIC_DIR / "index.html").read_text(encoding="utf-8").replace("{{PLOTLY_VERSION}}", bundle_version)
    legend = categories()
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PAGE_PREFIX}/")

    @router.get(f"{PAGE_PREFIX}/")
    def page() -> HTMLResponse:
        return HTMLResponse(index)

    compressed = _Gzipped(bundle_path)

    @router.get(f"{PAGE_PREFIX}/vendor/plotly-{{version}}.min.js")
    def plotly_js(version: str, request: Request) -> Response:
        headers = {**LONG_CACHE, "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(compressed.body(), media_type="text/javascript", headers=headers)
        return FileResponse(bundle_path, media_type="text/javascript", headers=headers)

    @router.get(f"{PAGE_PREFIX}/aqi-categories.json")
    def aqi_categories() -> JSONResponse:
        return JSONResponse(legend)

    app.include_router(router)
    app.mount(f"{PAGE_PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="public_page_static")


class _Gzipped:
    """The bundle gzipped once, on first request (4.8 MB becomes about 1.4 MB on a province's uplink);
    not at start-up, so a server that nobody browses (every API test) never pays for it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._body: bytes | None = None
        self._lock = threading.Lock()

    def body(self) -> bytes:
        with self._lock:
            if self._body is None:
                self._body = gzip.compress(self._path.read_bytes(), compresslevel=6, mtime=0)
            return self._body
