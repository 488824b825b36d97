"""Memory over time: resident set size (RSS) across checkpoint switches and across many generations.

    .venv/bin/python bench/memory.py [--switches 50] [--generations 200] [--size 64] [--ckpt A --ckpt B]

(a) ``--switches`` alternating loads of two checkpoints with sd_checkpoints_limit 1 and sd_checkpoint_cache 0:
    after the first two, RSS must stay flat (each switch frees the previous model);
(b) the same with sd_checkpoint_cache 1: the unloaded model stays in RAM, so RSS is higher but still flat and the
    switches take no disk load;
(c) ``--generations`` txt2img requests in a row on one model: RSS flat.
Without ``--ckpt`` two tiny random checkpoints in A1111's layout are written to a temp data dir (the figures then
measure the server's own leaks, not a 2 GB model's size). Prints RSS in MiB after the warm-up, the maximum drift
from it in percent, and the time per switch. Not a test: memory belongs in a benchmark, not an assertion.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rss_mib() -> float:
    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def drift(values: list[float]) -> float:
    """Largest distance from the first value, in percent of it."""
    return max(abs(v - values[0]) for v in values) / values[0] * 100


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--switches", type=int, default=50)
    ap.add_argument("--generations", type=int, default=200)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ckpt", action="append", default=[], help="a checkpoint file (give two)")
    args = ap.parse_args()

    from webui.config import parse
    from webui.core.models.demo_model import write_tiny_checkpoint
    from webui.core.types import GenerationRequest
    from webui.state import build_state

    data = tempfile.mkdtemp(prefix="webui-memory-")
    try:
        ckpt_dir = os.path.join(data, "models", "Stable-diffusion")
        os.makedirs(ckpt_dir)
        if len(args.ckpt) >= 2:
            for path in args.ckpt[:2]:
                os.symlink(os.path.abspath(path), os.path.join(ckpt_dir, os.path.basename(path)))
        else:
            write_tiny_checkpoint(os.path.join(ckpt_dir, "a.safetensors"), "SD1", seed=1)
            write_tiny_checkpoint(os.path.join(ckpt_dir, "b.safetensors"), "SD1", seed=2)
        state = build_state(parse(["--nowebui", "--data-dir", data]), create_demo=False)
        a, b = state.registry.list()[:2]
        print(f"checkpoints: {a.name}, {b.name}; device {state.plan.description}")

        for cache in (0, 1):
            state.engine.unload()
            state.engine.models.ram.clear()
            state.settings.set("sd_checkpoint_cache", cache)
            samples, times = [], []
            for i in range(args.switches):
                started = time.perf_counter()
                state.engine.load(a if i % 2 == 0 else b)
                times.append(time.perf_counter() - started)
                samples.append(rss_mib())
            steady = samples[2:]
            print(f"({'ab'[cache]}) {args.switches} switches, sd_checkpoint_cache {cache}: RSS after 2 "
                  f"{steady[0]:.0f} MiB, min {min(steady):.0f}, max {max(steady):.0f}, drift {drift(steady):.1f} %; "
                  f"median switch {statistics.median(times[2:]) * 1000:.0f} ms")

        state.settings.set("sd_checkpoint_cache", 0)
        state.engine.models.ram.clear()
        request = GenerationRequest(prompt="a cat", steps=2, width=args.size, height=args.size, seed=1,
                                    sampler_name="Euler", checkpoint=a.title)
        samples = []
        for i in range(args.generations):
            state.engine.generate(request.replace(seed=i))
            if i % 10 == 9:
                samples.append(rss_mib())
        steady = samples[1:]
        print(f"(c) {args.generations} generations: RSS after 20 {steady[0]:.0f} MiB, min {min(steady):.0f}, "
              f"max {max(steady):.0f}, drift {drift(steady):.1f} %")
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
