"""Cluster throughput and routing overhead on this machine (issue 18 item 5).

    .venv/bin/python bench/cluster.py [--requests 24] [--steps 10] [--size 64] [--latency-runs 20] [--json OUT]

Needs the [cluster] extra. Uses the tiny random checkpoints (tests/fixtures) in a temporary data dir, two of them
(mixed traffic, as the cluster routes by checkpoint). For the single-process server and for a local Ray cluster with
1 and with 2 replicas (1 CPU each), all driven in-process through the same FastAPI TestClient:

- every torch runs on 1 thread (OMP_NUM_THREADS=1; the bench re-executes itself with it), as a 1-CPU replica does.
- the single-process server keeps 2 checkpoints loaded (sd_checkpoints_limit 2), as each replica does.
- throughput: ``--requests`` txt2img requests sent at once, alternating the two checkpoints, after one warm-up request
  per checkpoint; requests per minute = requests / wall time * 60.
- routing overhead: sequential 1-step requests; per request, the client's latency minus the time the app that ran the
  job spent on it (its X-Process-Time; for the cluster the replica's, sent back as X-Replica-Process-Time). The
  difference between the cluster's and the single-process server's figure is what the ingress, Ray Serve and the
  replica wrapper add.

On a 2-core machine the replicas share those 2 cores (and the ingress and Ray's own processes share them too), so 2
replicas cannot be twice as fast as 1 here: the figures show the mechanism, not GPU scaling, where each replica owns
its own device. Not a test: timings belong in a benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHECKPOINTS = ("tiny-sd15", "tiny-sd2-v")


def body(i: int, steps: int, size: int) -> dict:
    return {"prompt": "a cat", "steps": steps, "width": size, "height": size, "seed": 1000 + i,
            "sampler_name": "Euler a", "override_settings": {"sd_model_checkpoint": CHECKPOINTS[i % 2]}}


def measure(client, args, app_time_header: str) -> dict:
    for i in range(2):  # warm-up: each checkpoint loaded once (on the replica it is routed to)
        assert client.post("/sdapi/v1/txt2img", json=body(i, args.steps, args.size)).status_code == 200
    started = time.perf_counter()
    with ThreadPoolExecutor(args.requests) as pool:
        codes = list(pool.map(lambda i: client.post("/sdapi/v1/txt2img",
                                                    json=body(i, args.steps, args.size)).status_code,
                              range(args.requests)))
    wall = time.perf_counter() - started
    assert codes == [200] * args.requests, codes
    overheads, latencies = [], []
    for i in range(args.latency_runs):
        t0 = time.perf_counter()
        r = client.post("/sdapi/v1/txt2img", json=body(i, 1, args.size))
        latency = time.perf_counter() - t0
        assert r.status_code == 200
        latencies.append(latency)
        overheads.append(latency - float(r.headers[app_time_header]))
    return {"requests": args.requests, "wall_s": round(wall, 2),
            "requests_per_min": round(args.requests / wall * 60, 1),
            "latency_1step_ms": round(statistics.median(latencies) * 1000, 1),
            "overhead_ms": round(statistics.median(overheads) * 1000, 2)}


def main() -> int:
    if os.environ.get("OMP_NUM_THREADS") != "1":
        # torch in this process (the single-process server) on 1 thread, as in each 1-CPU replica: the same work per
        # request, and no OpenMP spinning against the other processes on a busy 2-core machine
        os.environ["OMP_NUM_THREADS"] = "1"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--latency-runs", type=int, default=20)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from tests.fixtures.checkpoints import write_fixture_models
    from webui.app import build_app
    from webui.config import parse

    data = tempfile.mkdtemp(prefix="bench-cluster-")
    write_fixture_models(os.path.join(data, "models"))
    results = {"cpus": os.cpu_count()}
    with TestClient(build_app(parse(["--nowebui", "--data-dir", data, "--skip-load-model-at-start"]))) as client:
        # the same model bound as a replica's (--models-per-replica 2): with A1111's default of 1 the single process
        # reloads on every switch of checkpoint, which is a different comparison (measured once: ~6 requests/min)
        assert client.post("/sdapi/v1/options", json={"sd_checkpoints_limit": 2}).status_code == 200
        results["single_process"] = measure(client, args, "X-Process-Time")
    print("single process:", results["single_process"], flush=True)

    import ray
    from ray import serve

    from webui.cluster.ingress import build_cluster_app
    from webui.cluster.options import NAMESPACE, ClusterOptions

    for replicas in (1, 2):
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, namespace=NAMESPACE, log_to_driver=False)
        try:
            app = build_cluster_app(parse(["--nowebui", "--data-dir", data]),
                                    ClusterOptions(replicas=replicas, max_queued_requests=args.requests))
            with TestClient(app) as client:
                results[f"cluster_{replicas}"] = measure(client, args, "X-Replica-Process-Time")
            app.state.cluster.shutdown()
        finally:
            serve.shutdown()
            ray.shutdown()
        print(f"cluster, {replicas} replica(s):", results[f"cluster_{replicas}"], flush=True)

    routing = results["cluster_1"]["overhead_ms"] - results["single_process"]["overhead_ms"]
    results["routing_overhead_ms"] = round(routing, 2)
    print(f"routing overhead per request (cluster vs single process): {routing:.1f} ms (target < 20 ms)")
    print(f"requests/min: single {results['single_process']['requests_per_min']}, "
          f"1 replica {results['cluster_1']['requests_per_min']}, 2 replicas {results['cluster_2']['requests_per_min']}"
          f" -- on {os.cpu_count()} CPU cores shared by everything")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
