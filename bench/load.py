"""Load and start-up times and memory across model switches, at full size.

    .venv/bin/python bench/load.py [--ckpt PATH] [--runs 3] [--switches 50]

1. checkpoint load: our single-file loader (webui/core/models/loader.py ``load_components``) vs diffusers'
   ``StableDiffusionPipeline.from_single_file`` on the same file, same dtype, alternated; diffusers is given a local
   config folder written from the loaded modules' own configs (offline, nothing downloaded). Target ratio <= 1.0.
2. start-up: ``launch.py --nowebui`` until ``GET /sdapi/v1/sd-models`` answers 200. Target <= 5 s.
3. memory: the server's RSS (and peak, VmHWM) after each of ``--switches`` checkpoint switches between two full-size
   checkpoints (sd_checkpoints_limit 1, no RAM cache): flat means every switch frees the previous model.
Without --ckpt the full-size random-weight SD1.5 of bench/fullsize.py is written under --work (a second one with
another seed for the switches). Prints a table and appends it to bench/RESULTS.md. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def diffusers_config_dir(comp, folder: str) -> str:
    """A local diffusers pipeline folder (configs only) for from_single_file, from the modules we loaded."""
    from diffusers import EulerDiscreteScheduler

    shutil.rmtree(folder, ignore_errors=True)
    comp.unet.save_config(os.path.join(folder, "unet"))
    comp.vae.save_config(os.path.join(folder, "vae"))
    comp.text_encoder.config.save_pretrained(os.path.join(folder, "text_encoder"))
    comp.tokenizer.save_pretrained(os.path.join(folder, "tokenizer"))
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           steps_offset=1).save_config(os.path.join(folder, "scheduler"))
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                   "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
                   "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "EulerDiscreteScheduler"],
                   "safety_checker": [None, None], "feature_extractor": [None, None],
                   "requires_safety_checker": False}, f)
    return folder


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt")
    ap.add_argument("--ckpt2", help="second checkpoint for the switches (default: a full-size SD1.5, seed 1)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--switches", type=int, default=50)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "webui-bench"))
    args = ap.parse_args()

    import gc

    import httpx
    import torch
    from diffusers import StableDiffusionPipeline

    from bench.fullsize import write_checkpoint
    from bench.throughput import append_results, vm_hwm_mib
    from webui.core.devices import plan_devices
    from webui.core.models.loader import load_components
    from webui.core.types import CheckpointInfo

    ckpt_dir = os.path.join(args.work, "models", "Stable-diffusion")
    ckpt = args.ckpt or write_checkpoint("SD1", os.path.join(ckpt_dir, "full-sd1.safetensors"))
    plan = plan_devices()
    tok = os.path.join(args.work, "tok")

    def ours():
        t = time.perf_counter()
        comp = load_components(CheckpointInfo(ckpt, os.path.basename(ckpt), "bench"), plan, tok)
        return time.perf_counter() - t, comp

    _, comp = ours()  # warm the page cache and get the configs
    config_dir = diffusers_config_dir(comp, os.path.join(args.work, "diffusers-config"))
    del comp
    gc.collect()

    def theirs():
        t = time.perf_counter()
        pipe = StableDiffusionPipeline.from_single_file(ckpt, config=config_dir, local_files_only=True,
                                                        torch_dtype=plan.dtype, safety_checker=None)
        pipe.to(plan.device)
        return time.perf_counter() - t

    a_times, b_times = [], []
    for _ in range(args.runs):
        t, comp = ours()
        del comp
        gc.collect()
        a_times.append(t)
        b_times.append(theirs())
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    a_med, b_med = statistics.median(a_times), statistics.median(b_times)

    # start-up and switches: a real server process
    data_dir = tempfile.mkdtemp(prefix="bench-load-")
    os.makedirs(os.path.join(data_dir, "models"))
    second = args.ckpt2
    if args.switches and second is None:
        second = write_checkpoint("SD1", os.path.join(ckpt_dir, "full-sd1-b.safetensors"), seed=1)
    port = free_port()
    t0 = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "launch.py"), "--nowebui", "--port", str(port), "--data-dir", data_dir,
         "--ckpt-dir", os.path.dirname(os.path.abspath(ckpt)), "--skip-load-model-at-start"],
        cwd=ROOT, env={**os.environ, "COMMANDLINE_ARGS": ""}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=1200)
    startup = None
    switch_lines = []
    try:
        while time.perf_counter() - t0 < 300:
            try:
                if client.get("/sdapi/v1/sd-models").status_code == 200:
                    startup = time.perf_counter() - t0
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        if args.switches:
            import psutil

            names = [os.path.splitext(os.path.basename(p))[0] for p in (ckpt, second)]
            client.post("/sdapi/v1/options", json={"sd_checkpoints_limit": 1, "sd_checkpoint_cache": 0})
            rss, secs = [], []
            for i in range(args.switches):
                t = time.perf_counter()
                client.post("/sdapi/v1/options", json={"sd_model_checkpoint": names[i % 2]}).raise_for_status()
                secs.append(time.perf_counter() - t)
                rss.append(psutil.Process(server.pid).memory_info().rss / 2**20)
            base = rss[min(1, len(rss) - 1)]
            switch_lines = [
                f"switches: {args.switches}, RSS after switch 2: {base:.0f} MiB, last: {rss[-1]:.0f} MiB, max drift "
                f"from switch 2: {max(abs(r - base) for r in rss[1:]) / base * 100 if len(rss) > 1 else 0:.1f} %, "
                f"peak (VmHWM) {vm_hwm_mib(server.pid):.0f} MiB, median switch {statistics.median(secs):.1f} s",
                f"RSS per switch (MiB): {[round(r) for r in rss]}",
            ]
    finally:
        server.terminate()
        server.wait(60)

    lines = [
        f"model: {os.path.basename(ckpt)} ({os.path.getsize(ckpt) / 2**30:.2f} GiB), device {plan.description}, "
        f"{args.runs} alternated loads",
        f"(a) load_components          : median {a_med:.2f} s  runs {[round(x, 2) for x in a_times]}",
        f"(b) diffusers from_single_file: median {b_med:.2f} s  runs {[round(x, 2) for x in b_times]}",
        f"ratio a/b: {a_med / b_med:.3f} (target <= 1.0)",
        f"start-up until /sdapi/v1/sd-models answers: {startup:.2f} s (target <= 5 s)" if startup is not None
        else "start-up: the server did not answer within 300 s",
        *switch_lines,
    ]
    print("\n".join(lines))
    append_results("load.py", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
