"""Server overhead: a bare diffusers pipeline call vs POST /sdapi/v1/txt2img on the same model, interleaved.

    .venv/bin/python bench/overhead.py [--ckpt PATH] [--steps 10] [--size 256] [--runs 5]

(a) loads the checkpoint with our single-file loader (diffusers modules), builds diffusers'
StableDiffusionPipeline from those very modules with EulerDiscreteScheduler, and times ``pipe(...)``;
(b) starts ``launch.py --nowebui`` on a free port with the same checkpoint and times the HTTP request (including
JSON, base64 and PNG encoding). Runs alternate a, b, a, b ... so drift hits both. Prints the median times, the
ratio b/a and the peak RSS of each process. Not a test: timing belongs in a benchmark, not an assertion.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", help="checkpoint file (default: the demo model, written to a temp data dir)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    import httpx
    import psutil
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from webui.core.models.demo_model import ensure_demo_checkpoint
    from webui.core.devices import plan_devices
    from webui.core.models.loader import load_components
    from webui.core.types import CheckpointInfo

    data_dir = tempfile.mkdtemp(prefix="bench-")
    ckpt = args.ckpt or ensure_demo_checkpoint(os.path.join(data_dir, "models", "Stable-diffusion"))
    ckpt_dir = os.path.dirname(os.path.abspath(ckpt))

    # (a) bare diffusers on the same modules
    plan = plan_devices()
    comp = load_components(CheckpointInfo(ckpt, os.path.basename(ckpt), "bench"), plan, os.path.join(data_dir, "tok"))
    if comp.arch != "SD1" and comp.arch != "SD2":
        print("this benchmark builds StableDiffusionPipeline; use an SD1.x/SD2.x checkpoint", file=sys.stderr)
        return 2
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        prediction_type=comp.prediction_type, timestep_spacing="linspace", steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=comp.vae, text_encoder=comp.text_encoder, tokenizer=comp.tokenizer, unet=comp.unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)

    def run_a():
        g = torch.Generator(plan.device).manual_seed(1)
        t = time.perf_counter()
        pipe("a photo of a cat", num_inference_steps=args.steps, guidance_scale=7.0, width=args.size,
             height=args.size, generator=g)
        return time.perf_counter() - t

    # (b) the server
    port = free_port()
    env = {**os.environ, "COMMANDLINE_ARGS": ""}
    server = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "launch.py"), "--nowebui", "--port", str(port), "--data-dir", data_dir,
         "--ckpt-dir", ckpt_dir, "--ckpt", ckpt],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
    body = {"prompt": "a photo of a cat", "steps": args.steps, "cfg_scale": 7.0, "width": args.size,
            "height": args.size, "seed": 1, "sampler_name": "Euler"}
    try:
        for _ in range(600):
            try:
                if client.get("/sdapi/v1/sd-models").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        client.post("/sdapi/v1/txt2img", json={**body, "steps": 1}).raise_for_status()  # load + warm up
        run_a()  # warm up

        def run_b():
            t = time.perf_counter()
            client.post("/sdapi/v1/txt2img", json=body).raise_for_status()
            return time.perf_counter() - t

        a_times, b_times = [], []
        for _ in range(args.runs):
            a_times.append(run_a())
            b_times.append(run_b())
        server_rss = psutil.Process(server.pid).memory_info().rss
        try:
            server_peak = psutil.Process(server.pid).memory_full_info().uss
        except psutil.Error:
            server_peak = server_rss
    finally:
        server.terminate()
        server.wait(30)

    a_med, b_med = statistics.median(a_times), statistics.median(b_times)
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"model: {os.path.basename(ckpt)} ({comp.arch}), {args.size}x{args.size}, {args.steps} steps, Euler, "
          f"CFG 7, device {plan.description}, {args.runs} interleaved runs")
    print(f"(a) bare diffusers pipeline: median {a_med:.3f} s  runs {[round(x, 3) for x in a_times]}")
    print(f"(b) POST /sdapi/v1/txt2img : median {b_med:.3f} s  runs {[round(x, 3) for x in b_times]}")
    print(f"ratio b/a: {b_med / a_med:.3f}")
    print(f"peak RSS (a) bench process: {own_peak / 2**20:.0f} MiB; (b) server process RSS: {server_rss / 2**20:.0f} MiB "
          f"(USS {server_peak / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
