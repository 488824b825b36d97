"""build_app(config): the composition root. One FastAPI app: the /sdapi/v1 API (with --api or --nowebui) and the
Gradio UI mounted on it at / (unless --nowebui) -- both over the same AppState, queue and engine."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, RedirectResponse

from webui.api.errors import install_error_handlers
from webui.api.handlers.generation import TASK_ID_HEADER
from webui.api.routes import install_routes
from webui.config import Config, ConfigError
from webui.state import AppState, build_state, preload_model

log = logging.getLogger(__name__)


def build_app(config: Config, state: AppState | None = None) -> FastAPI:
    """Build the app; models are loaded by the queue worker after start-up, never here."""
    if config.extra("share") and not config.nowebui:
        # A1111's --share opens a public tunnel through gradio's share servers; this server never reaches the internet.
        raise ConfigError("--share is not supported: it needs gradio's tunnel service on the internet. Use --listen "
                          "(and --gradio-auth) to reach the UI from other machines.")
    ui_users = config.gradio_auth_users() if not config.nowebui else {}
    state = state or build_state(config)
    # Live previews read the stored options, the architecture of the model being sampled (SDXL decoders), the
    # weight files in models/VAE-approx (Approx NN, TAESD) and the model's own VAE ("Full").
    from webui.core.generation.previews import PreviewDecoder

    state.queue.configure_previews(
        options=state.settings.get,
        model_arch=lambda: getattr(state.engine.current_model(), "arch", None),
        decoder=PreviewDecoder(models_dir=config.models_dir, model=state.engine.current_model,
                               dtype=state.plan.dtype, plan=state.plan),
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
        if response.status_code == 401 and ui_users and request.url.path.rstrip("/").endswith("/config") \
                and not request.url.path.startswith(("/sdapi/", "/internal/")):
            # A1111's gradio answers an unauthenticated GET /config with {"detail": "Not authenticated"}; gradio 6
            # nests an object there (error + auth_message), which clients that probe the UI do not expect
            return JSONResponse({"detail": "Not authenticated"}, status_code=401,
                                headers={"X-Process-Time": response.headers["X-Process-Time"]})
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
    with_ui = not config.nowebui and ui_available()
    if config.api_enabled or not with_ui:
        # /internal/* belongs to the UI server: present unless --nowebui (A1111 §9.4).
        add_api_route = install_routes(app, config, ui=not config.nowebui)
        # plugins add their routes (ControlNet's /controlnet/*) behind the same --api-auth (A1111 on_app_started)
        state.plugins.call("on_app_started", app=app, state=state, add_api_route=add_api_route)
    else:
        # The UI without --api: A1111 serves its /internal/* progress routes, not /sdapi/v1. The route table is
        # installed on a scratch app and only its UI rows are kept, so there is still one table.
        scratch = FastAPI()
        install_routes(scratch, config, ui=True)
        app.router.routes.extend(r for r in scratch.router.routes if getattr(r, "path", "").startswith("/internal/"))

    if with_ui:
        mount_ui(app, state, users=ui_users)
    elif not config.nowebui:
        # Without gradio installed the browser entry point is the interactive API page.
        @app.get("/", include_in_schema=False)
        def root():
            return RedirectResponse("docs")

    # A1111 extensions' app_started callbacks (demo, app): the page exists; their routes must come before the
    # page's catch-all mount at / to be reachable
    state.plugins.call("on_app_mounted", app=app, state=state, demo=getattr(app.state, "gradio_blocks", None))
    _page_mount_last(app)
    return app


def _page_mount_last(app: FastAPI) -> None:
    """Move the gradio page's mount (path "/") after every route, so routes added after it are served."""
    from starlette.routing import Mount

    routes = app.router.routes
    mounts = [r for r in routes if isinstance(r, Mount) and r.path in ("", "/")]
    if mounts:
        routes[:] = [r for r in routes if r not in mounts] + mounts


def mount_ui(app: FastAPI, state: AppState, *, users: dict[str, str]) -> None:
    """Build the Gradio Blocks over ``state`` and mount them at / of the same app (A1111 serves its UI at the root,
    under --subpath through the app's root_path). ``users`` (--gradio-auth, --gradio-auth-path) protect the page,
    its file routes and its queue; the /sdapi API keeps its own --api-auth."""
    import gradio as gr

    from webui.ui.blocks import CSS, build_ui, extension_css, page_head

    demo = build_ui(state)
    demo.queue(default_concurrency_limit=None)
    gr.mount_gradio_app(
        app, demo, path="/",
        auth=list(users.items()) or None,
        auth_message="Stable Diffusion web UI: log in with the --gradio-auth credentials" if users else None,
        show_error=True,
        ssr_mode=False,
        mcp_server=False,
        run_history=False,
        footer_links=["api", "settings"],
        css=CSS + extension_css(state),
        head=page_head(state),
        server_name=state.config.server_host,
        server_port=state.config.effective_port,
    )
    app.state.gradio_blocks = demo


def ui_available() -> bool:
    """Whether the Gradio UI can be served (gradio is installed); without it the server runs the API only."""
    import importlib.util

    return importlib.util.find_spec("gradio") is not None
