"""Shared fixtures: offline mode, no network, a data dir with tiny A1111-layout checkpoints."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection outside loopback fails loudly: nothing may be downloaded at run time."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1") or host.startswith("/")):
            raise RuntimeError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session")
def models_root(tmp_path_factory):
    from tests.fixtures.checkpoints import write_fixture_models

    root = tmp_path_factory.mktemp("data")
    paths = write_fixture_models(str(root / "models"))
    return root, paths


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tok"))


@pytest.fixture
def data_dir(models_root, tmp_path):
    """A fresh data dir per test whose models/ points at the session's tiny checkpoints (copied as symlinks)."""
    root, _ = models_root
    d = tmp_path / "webui-data"
    (d / "models").mkdir(parents=True)
    os.symlink(root / "models" / "Stable-diffusion", d / "models" / "Stable-diffusion")
    return d
