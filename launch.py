"""python launch.py [A1111 flags]: argv -> Config -> build_app(config) -> uvicorn.run(app). Nothing else.

Dependencies are installed by ./webui.sh (A1111's launcher name) before this runs.
"""

from __future__ import annotations

import logging
import os
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    from webui.config import ConfigError, parse

    try:
        config = parse(argv)
    except ConfigError as e:
        print(e.message, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from webui.app import build_app, ui_available

    app = build_app(config)
    if not ui_available() and not config.nowebui:
        logging.getLogger("launch").warning(
            "The Gradio web UI is not part of this build yet; serving the /sdapi/v1 API (docs at /docs)."
        )
    host = config.server_host
    scheme = "https" if config.tls_certfile else "http"
    print(f"Running on {scheme}://{host}:{config.effective_port} (API docs at /docs)", flush=True)
    server = uvicorn.Server(uvicorn.Config(
        app,
        host=host,
        port=config.effective_port,
        timeout_keep_alive=config.timeout_keep_alive,
        ssl_keyfile=config.tls_keyfile,
        ssl_certfile=config.tls_certfile,
        log_level="info",
    ))
    # --api-server-stop: server-stop / server-restart end serving as Ctrl+C does; restart then runs us again
    control = app.state.webui.server
    control.restartable = True
    threading.Thread(target=lambda: (control.event.wait(), setattr(server, "should_exit", True)),
                     name="server-control", daemon=True).start()
    server.run()
    if control.command == "restart":
        args = sys.argv[1:] if argv is None else list(argv)
        print("Restarting with the same flags", flush=True)
        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), *args])
    return 0


if __name__ == "__main__":
    sys.exit(main())
