"""The API served by uvicorn, in this process (``quantrac api serve``, tests' threads)."""

from __future__ import annotations

import uvicorn

from api.app import ApiConfig, create_app


def make_server(config: ApiConfig, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for ``config``; ``run()`` serves until ``should_exit`` is set (SIGINT/SIGTERM in the CLI).

    uvicorn's own access log is off: one line per request would drown the events that matter (the
    API logs refusals it cannot explain and every internal error as structlog events)."""
    app = create_app(config)
    return uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning", lifespan="on")
    )
