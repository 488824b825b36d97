"""--api-server-stop: POST /sdapi/v1/server-kill, server-restart and server-stop (A1111 api.py kill_webui,
restart_webui, stop_webui).

Stop and restart end serving the way uvicorn shuts down: requests in flight are answered, the running job is
interrupted (it keeps what it made; images are written atomically, so nothing is left half-saved) and queued jobs
are cancelled; restart then re-executes the process with the same flags. Kill ends the process at once, as A1111.
"""

from __future__ import annotations

import logging
import os
import threading

from fastapi import Request, Response

log = logging.getLogger(__name__)


def server_kill(request: Request) -> Response:
    """A1111 kill_webui (restart.stop_program: os._exit(0)); here just after the response is sent."""
    log.warning("POST /sdapi/v1/server-kill: the process exits now")
    threading.Timer(0.2, os._exit, args=(0,)).start()
    return Response(status_code=200)


def server_restart(request: Request) -> Response:
    """A1111 restart_webui: 501 when the process cannot restart itself (A1111: not started by its launcher)."""
    control = request.app.state.webui.server
    if not control.restartable:
        return Response(status_code=501)
    log.warning("POST /sdapi/v1/server-restart: stopping, then starting again with the same flags")
    control.request("restart")
    return Response(status_code=200)


def server_stop(request: Request) -> Response:
    """A1111 stop_webui: answers "Stopping." and the server shuts down."""
    log.warning("POST /sdapi/v1/server-stop: stopping")
    request.app.state.webui.server.request("stop")
    return Response("Stopping.")
