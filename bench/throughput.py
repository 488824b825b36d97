"""Seconds per sampling step, per attention / memory / precision mode, on a full-size random-weight checkpoint.

    .venv/bin/python bench/throughput.py [--arch SD1] [--size 256] [--steps 4] [--modes sdp,bf16,tome,...]

Each mode runs in its own process (so its peak RSS -- the kernel's VmHWM -- is its own) through the real engine
(``Engine.generate``), on the checkpoint bench/fullsize.py writes (written once under --work). Seconds per step are
the median interval between the sampler's step callbacks after the first step (model loading, text encoding and the
VAE are not in it). The image of each mode is compared with the first mode's (mean and max absolute pixel
difference). Prints a table and appends it to bench/RESULTS.md with the machine and the date. On a GPU, peak VRAM
(torch.cuda.max_memory_allocated) is reported too. Not a test: timings belong in a benchmark.

Modes (name: launch flags | override_settings):
  sdp            (default)                      sub-quad      --opt-sub-quad-attention
  sdp-no-mem     --opt-sdp-no-mem-attention     v1            --opt-split-attention-v1
  doggettx       --opt-split-attention          invokeai      --opt-split-attention-invokeai
  none           cross_attention_optimization None
  xformers       --xformers (GPU with the package)
  tome           token_merging_ratio 0.5        bf16          --precision autocast (CPU: bfloat16 autocast)
  fp16           GPU default half precision     fp32          --no-half
  medvram        --medvram                      lowvram       --lowvram
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODES: dict[str, tuple[list[str], dict]] = {
    "sdp": ([], {}),
    "sdp-no-mem": (["--opt-sdp-no-mem-attention"], {}),
    "sub-quad": (["--opt-sub-quad-attention"], {}),
    "v1": (["--opt-split-attention-v1"], {}),
    "invokeai": (["--opt-split-attention-invokeai"], {}),
    "doggettx": (["--opt-split-attention"], {}),
    "none": ([], {"cross_attention_optimization": "None"}),
    "xformers": (["--xformers"], {}),
    "tome": ([], {"token_merging_ratio": 0.5}),
    "bf16": (["--precision", "autocast"], {}),
    "fp16": ([], {}),
    "fp32": (["--no-half"], {}),
    "medvram": (["--medvram"], {}),
    "lowvram": (["--lowvram"], {}),
}


def vm_hwm_mib(pid: int | str = "self") -> float:
    """Peak resident set size of a process (VmHWM), MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__}"


def append_results(title: str, lines: list[str]) -> None:
    path = os.path.join(ROOT, "bench", "RESULTS.md")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open(path, "a") as f:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        f.write(f"\n## {title} -- {stamp}\n\nMachine: {machine()}; load average at the end {load}\n\n```\n"
                + "\n".join(lines) + "\n```\n")


def run_one(args) -> int:
    """Child process: one mode, prints one JSON line."""
    import numpy as np
    import torch

    from webui.config import parse
    from webui.core.queue import ProgressTracker
    from webui.core.types import GenerationRequest
    from webui.state import build_state

    flags, overrides = MODES[args.one]
    st = build_state(parse(["--nowebui", "--data-dir", args.work, *flags]), create_demo=False)
    name = os.path.splitext(os.path.basename(args.ckpt))[0]
    t0 = time.perf_counter()
    st.engine.load(st.engine.resolve_checkpoint(name))
    load_s = time.perf_counter() - t0
    stamps: list[float] = []

    class Timed(ProgressTracker):
        def step(self, step, steps, latent=None):
            stamps.append(time.perf_counter())

    req = GenerationRequest(prompt="a photo of a cat", negative_prompt="", steps=args.steps, width=args.size,
                            height=args.size, seed=1, sampler_name="Euler", override_settings=overrides)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = st.engine.generate(req, Timed(options=lambda k: {"live_previews_enable": False}.get(k, 0)))
    total = time.perf_counter() - t0
    intervals = [b - a for a, b in zip(stamps, stamps[1:])]
    out = os.path.join(args.work, f"img-{args.one}.npy")
    np.save(out, np.asarray(res.images[0]))
    print(json.dumps({
        "mode": args.one, "s_per_step": statistics.median(intervals) if intervals else float("nan"),
        "first_step_s": stamps[0] - t0 if stamps else float("nan"), "total_s": total, "load_s": load_s,
        "peak_rss_mib": vm_hwm_mib(),
        "peak_vram_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "plan": st.plan.description, "image": out,
    }))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=["SD1", "SDXL"], default="SD1")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--modes", default="sdp,bf16,tome,sub-quad,v1,doggettx,invokeai,none,medvram,lowvram")
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "webui-bench"))
    ap.add_argument("--ckpt", help="checkpoint (default: bench/fullsize.py's, written under --work)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ckpt is None:
        args.ckpt = os.path.join(args.work, "models", "Stable-diffusion", f"full-{args.arch.lower()}.safetensors")
    if args.one:
        return run_one(args)

    import numpy as np

    from bench.fullsize import write_checkpoint

    if not os.path.exists(args.ckpt):
        print(f"writing {args.ckpt} ...", file=sys.stderr)
        write_checkpoint(args.arch, args.ckpt)
    rows, first = [], None
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--one", mode, "--arch", args.arch, "--size", str(args.size), "--steps",
               str(args.steps), "--work", args.work, "--ckpt", args.ckpt]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
        if proc.returncode != 0 or line is None:
            rows.append(f"{mode:<11} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:90]}")
            print(rows[-1], flush=True)
            continue
        r = json.loads(line)
        img = np.load(r["image"]).astype(int)
        if first is None:
            first = (mode, img)
        diff = np.abs(img - first[1]) if img.shape == first[1].shape else None
        vram = f"{r['peak_vram_mib']:8.0f}" if r["peak_vram_mib"] is not None else "     n/a"
        rows.append(f"{mode:<11} {r['s_per_step']:9.3f} {r['peak_rss_mib']:10.0f} {vram} "
                    f"{diff.mean() if diff is not None else float('nan'):9.2f} "
                    f"{diff.max() if diff is not None else -1:5d}  {r['plan']}")
        print(rows[-1], flush=True)
    head = (f"{args.arch} {os.path.basename(args.ckpt)}, {args.size}x{args.size}, {args.steps} steps Euler, CFG 7, "
            f"batch 1 (s/step: median after the first step)")
    table = [head, f"{'mode':<11} {'s/step':>9} {'peak RSS':>10} {'VRAM MiB':>8} {'mean diff':>9} {'max':>5}  plan",
             *rows]
    print("\n".join(table[:2]))
    append_results("throughput.py", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
