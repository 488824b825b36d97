"""build_app(config): the composition root. One FastAPI app: the /sdapi/v1 API (with --api or --nowebui) and,
once the UI lands, the Gradio tabs mounted on it -- both over the same AppState, queue and engine."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import RedirectResponse

from webui.api.errors import install_error_handlers
from webui.api.handlers.generation import TASK_ID_HEADER
from webui.api.routes import install_routes
from webui.config import Config
from webui.state import AppState, build_state, preload_model

log = logging.getLogger(__name__)


def build_app(config: Config, state: AppState | None = None) -> FastAPI:
    """Build the app; models are loaded by the queue worker after start-up, never here."""
    state = state or build_state(config)
    # Live previews read the stored options and the architecture of the model being sampled (SDXL coefficients).
    state.queue.configure_previews(
        options=state.settings.get,
        model_arch=lambda: getattr(state.engine.current_model(), "arch", None),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.queue.start()
        if not config.skip_load_model_at_start:
            preload_model(state)
        yield
        state.queue.stop()

    app = FastAPI(lifespan=lifespan, root_path=f"/{config.subpath.strip('/')}" if config.subpath else "")
    app.state.webui = state

    @app.middleware("http")
    async def log_and_time(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        response.headers["X-Process-Time"] = str(round(time.perf_counter() - started, 4))
        if config.api_log and request.url.path.startswith("/sdapi"):
            log.info("API %s %s %s %.3fs", response.status_code, request.method, request.url.path,
                     time.perf_counter() - started)
        return response

    origins = [o for o in (config.cors_allow_origins or "").split(",") if o]
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_origin_regex=config.cors_allow_origins_regex,
        allow_methods=["*"],
        allow_headers=["*"],
        allow_credentials=True,
        expose_headers=[TASK_ID_HEADER],
    )
    app.add_middleware(GZipMiddleware, minimum_size=1000)
    install_error_handlers(app)
    if config.api_enabled or not ui_available():
        # /internal/* belongs to the UI server: present unless --nowebui (A1111 §9.4).
        install_routes(app, config, ui=not config.nowebui)

    if not ui_available():
        # Until the Gradio tabs land (issue 06) the browser entry point is the interactive API page.
        @app.get("/", include_in_schema=False)
        def root():
            return RedirectResponse("docs")

    return app


def ui_available() -> bool:
    """The Gradio UI is not built yet (issue 06); the server says so at start-up."""
    return False
