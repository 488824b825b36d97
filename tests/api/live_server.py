"""The real app served by uvicorn on a loopback port in a thread, for tests that drive it with real HTTP clients."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

import uvicorn

from webui.app import build_app
from webui.config import parse


def data_dir_with(root, models_root, *names: str):
    """A data dir whose models/Stable-diffusion holds (symlinks to) the named session fixture checkpoints."""
    src_root, _ = models_root
    src = src_root / "models" / "Stable-diffusion"
    dst = root / "models" / "Stable-diffusion"
    dst.mkdir(parents=True)
    for name in names:
        os.makedirs(os.path.dirname(dst / name), exist_ok=True)
        os.symlink(src / name, dst / name)
    return root


@contextmanager
def live_server(argv: list[str]):
    """Yield (base_url, app) for ``build_app(parse(argv))`` served by uvicorn on 127.0.0.1:<free port>."""
    app = build_app(parse(argv))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(30)
