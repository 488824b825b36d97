"""The cluster's own flags (``python -m webui.cluster --replicas N ...``), parsed apart from A1111's: they are not
A1111 flags, so they stay out of ``/sdapi/v1/cmd-flags`` and out of ``launch.py``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

#: Ray namespace and Serve application name of one cluster server.
NAMESPACE = "sd-webui"
APP_NAME = "sd-webui"
DEPLOYMENT = "sd-replica"
COORDINATOR = "sd-webui-coordinator"


@dataclass(frozen=True)
class ClusterOptions:
    """How many replicas, where, and their bounds. See ``build_parser`` for the meaning of each."""

    replicas: int = 2
    address: str | None = None
    models_per_replica: int = 2
    max_ongoing_requests: int = 4
    max_queued_requests: int = 32
    cpus_per_replica: float = 1.0
    gpus_per_replica: float | None = None  # None: 1 when the Ray cluster has GPUs, else 0
    retry_after_s: int = 5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m webui.cluster", add_help=False,
        description="Serve /sdapi/v1 from N Ray Serve replicas (one device and model cache each) behind one ingress. "
        "Other flags are A1111's (launch.py --help).")
    p.add_argument("--replicas", type=int, default=2, help="number of replicas (one device each; default 2)")
    p.add_argument("--address", type=str, default=None,
                   help="Ray cluster to join (ray://HOST:10001 or HOST:6379; default: start a local one; "
                   "'auto' joins the one `ray start` began on this machine)")
    p.add_argument("--models-per-replica", type=int, default=2,
                   help="checkpoints one replica keeps loaded (Serve multiplexing; LRU beyond; default 2)")
    p.add_argument("--max-ongoing-requests", type=int, default=4,
                   help="requests one replica holds at once: 1 running, the rest in its queue (default 4)")
    p.add_argument("--max-queued-requests", type=int, default=32,
                   help="requests waiting at the ingress for a free replica; beyond this 503 + Retry-After "
                   "(default 32)")
    p.add_argument("--cpus-per-replica", type=float, default=1.0, help="Ray CPUs per replica (default 1)")
    p.add_argument("--gpus-per-replica", type=float, default=None,
                   help="Ray GPUs per replica (default 1 when the cluster has GPUs, else 0)")
    p.add_argument("--retry-after", type=int, default=5, dest="retry_after_s",
                   help="Retry-After seconds on a 503 (default 5)")
    return p


def parse(argv: Sequence[str]) -> tuple[ClusterOptions, list[str]]:
    """(cluster options, the remaining A1111 flags)."""
    ns, rest = build_parser().parse_known_args(list(argv))
    if ns.replicas < 1 or ns.models_per_replica < 1 or ns.max_ongoing_requests < 1 or ns.max_queued_requests < 0:
        raise SystemExit("--replicas, --models-per-replica and --max-ongoing-requests must be >= 1, "
                         "--max-queued-requests >= 0")
    return ClusterOptions(**vars(ns)), rest
