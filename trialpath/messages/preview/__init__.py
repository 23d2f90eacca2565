"""`trialpath templates preview`: a local web page showing every message the journey sends.

    GET /                               every (message, channel) a persona receives, one card each
    GET /message/{channel}/{message}    one card alone, larger
    GET /events                         Server-Sent Events: `change` when a template file changes
    GET /version                        JSON fingerprint of the templates folder
    GET /journey                        the journey drawn (trialpath/messages/journeymap.py), each
                                        message linking to its card, each card back to it

The pages take `persona`, `locale`, `sample` (see trialpath/messages/samples.py) and `width`
(`desktop` or `mobile`). Messages are rendered by the worker's own Renderer, whose Jinja loader
reloads edited files, so a page load always shows the files as they are on disk; the page's
EventSource asks for that load when the folder's fingerprint changes.

The package's modules, by job: `folder` watches the templates folder, `sends` lists what the
journey sends each persona, `cards` renders each send as a card, `pages` holds the HTML
templates and `routes` the HTTP routes; this module builds the app and serves it.
"""

from __future__ import annotations

import logging
import threading
import time
import webbrowser
from types import FrameType

import uvicorn
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException

# The preview's state and the templates folder's change events (re-exported:
# `preview.Preview`, `preview.template_changes`).
from trialpath.messages.preview.cards import Preview as Preview
from trialpath.messages.preview.folder import template_changes as template_changes
from trialpath.messages.preview.routes import problem_page, router
from trialpath.operations.config import Settings
from trialpath.operations.services import ServiceError, port_open

log = logging.getLogger("trialpath.preview")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="Trialpath message preview", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.preview = Preview(settings)
    app.include_router(router)
    app.add_exception_handler(StarletteHTTPException, problem_page)
    return app


def serve_preview(
    settings: Settings, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = False
) -> None:
    """Serves the preview until Ctrl-C; raises ServiceError when it cannot start."""
    if not settings.templates_dir.is_dir():
        raise ServiceError(f"templates folder {settings.templates_dir} does not exist")
    if port_open(host, port):
        raise ServiceError(f"{host}:{port} is already in use; choose another port with --port")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("preview listening on %s: anyone who can reach it sees the templates", host)
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", access_log=False, timeout_graceful_shutdown=3
    )
    server = _Server(config, app.state.preview)
    if open_browser:
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
        threading.Thread(target=_open_when_started, args=(server, url), daemon=True).start()
    server.run()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, preview: Preview) -> None:
        super().__init__(config)
        self.preview = preview

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.preview.stopping.set()
        super().handle_exit(sig, frame)


def _open_when_started(server: uvicorn.Server, url: str) -> None:
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    if server.started:
        webbrowser.open(url)
