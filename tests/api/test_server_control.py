"""Issue 13 item 5: --api-server-stop registers A1111's server-kill, server-restart and server-stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from webui.app import build_app
from webui.config import parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_routes_only_with_the_flag(data_dir):
    plain = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    with TestClient(build_app(plain)) as c:
        for route in ("server-kill", "server-restart", "server-stop"):
            assert c.post(f"/sdapi/v1/{route}").status_code == 404
    flagged = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start", "--api-server-stop"])
    with TestClient(build_app(flagged)) as c:
        state = c.app.state.webui
        assert c.post("/sdapi/v1/server-restart").status_code == 501  # served without launch.py: cannot restart
        assert state.server.command is None
        r = c.post("/sdapi/v1/server-stop")
        assert r.status_code == 200 and r.text == "Stopping." and state.server.command == "stop"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(url: str, proc, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("server did not come up")


def _launch(data_dir, port):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "launch.py"), "--nowebui", "--api-server-stop", "--port", str(port),
         "--data-dir", str(data_dir), "--skip-load-model-at-start"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_restart_stop_and_kill_a_real_process(data_dir):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/sdapi/v1/options"
    proc = _launch(data_dir, port)
    try:
        _wait_up(url, proc)
        assert httpx.post(f"http://127.0.0.1:{port}/sdapi/v1/server-restart", timeout=10).status_code == 200
        time.sleep(1.0)
        _wait_up(url, proc)  # the same process, executed again with the same flags
        r = httpx.post(f"http://127.0.0.1:{port}/sdapi/v1/server-stop", timeout=10)
        assert r.status_code == 200 and r.text == "Stopping."
        assert proc.wait(timeout=60) == 0
        out = proc.stdout.read()
        assert out.count("Running on") == 2 and "Restarting with the same flags" in out
    finally:
        if proc.poll() is None:
            proc.kill()
    proc = _launch(data_dir, port)
    try:
        _wait_up(url, proc)
        try:
            httpx.post(f"http://127.0.0.1:{port}/sdapi/v1/server-kill", timeout=10)
        except httpx.HTTPError:
            pass  # A1111 exits before answering; we answer first, both are fine for a client
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
