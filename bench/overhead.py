"""Server overhead: a bare diffusers pipeline call vs POST /sdapi/v1/txt2img on the same model, interleaved.

    .venv/bin/python bench/overhead.py [--ckpt PATH] [--steps 10] [--size 256] [--runs 5]

(a) loads the checkpoint with our single-file loader (diffusers modules) and runs the bare minimum of a txt2img:
the text encoder, the same k-diffusion Euler sampler function the server runs (pipelines/k_sampling.py
``sample_euler``, on the same "Automatic" sigmas of the model's schedule) around a plain batched-CFG call of the
diffusers UNet, and the VAE decode -- no request, no queue, no infotext, no PNG;
(b) starts ``launch.py --nowebui`` on a free port with the same checkpoint and times the HTTP request (including
JSON, base64 and PNG encoding). Both sides therefore differ only by what the server adds. Runs alternate a, b, a,
b ... so drift hits both. Prints the median times, the ratio b/a and the peak RSS of each process, both read the
same way (the kernel's VmHWM of the process). Appends the table to bench/RESULTS.md. Without --ckpt a full-size
random-weight SD1.5 checkpoint (bench/fullsize.py) is used. Not a test: timing belongs in a benchmark.
"""

from __future__ import annotations

import argparse
import os
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
    ap.add_argument("--ckpt", help="checkpoint file (default: bench/fullsize.py's SD1.5, written under --work)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "webui-bench"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    import httpx
    import torch

    from bench.fullsize import write_checkpoint
    from bench.throughput import append_results, vm_hwm_mib
    from pipelines.k_sampling import sample_euler
    from pipelines.schedules import ModelSigmas
    from webui.core.devices import plan_devices
    from webui.core.models.loader import load_components
    from webui.core.types import CheckpointInfo

    data_dir = tempfile.mkdtemp(prefix="bench-")
    ckpt = args.ckpt or write_checkpoint("SD1", os.path.join(args.work, "models", "Stable-diffusion",
                                                              "full-sd1.safetensors"))
    ckpt_dir = os.path.dirname(os.path.abspath(ckpt))

    # (a) bare diffusers on the same modules
    plan = plan_devices()
    comp = load_components(CheckpointInfo(ckpt, os.path.basename(ckpt), "bench"), plan, os.path.join(data_dir, "tok"))
    if comp.arch != "SD1" and comp.arch != "SD2":
        print("this benchmark runs SD1.x/SD2.x checkpoints", file=sys.stderr)
        return 2
    if comp.prediction_type != "epsilon":
        print("this benchmark's bare loop is written for epsilon-prediction models", file=sys.stderr)
        return 2
    model_sigmas = ModelSigmas(comp.alphas_cumprod)
    sigmas = model_sigmas.get_sigmas(args.steps).to(plan.device)  # A1111's "Automatic" schedule for Euler

    @torch.no_grad()
    def run_a():
        t = time.perf_counter()
        ids = [comp.tokenizer(p, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
               for p in ("", "a photo of a cat")]
        context = comp.text_encoder(torch.cat(ids).to(plan.device))[0].to(plan.dtype)
        g = torch.Generator("cpu").manual_seed(1)
        x = torch.randn((1, 4, args.size // 8, args.size // 8), generator=g).to(plan.device) * sigmas[0]

        def model(x, sigma, **_):
            c_in = 1 / (sigma ** 2 + 1) ** 0.5
            t_ = model_sigmas.sigma_to_t(sigma.cpu()).to(plan.device)
            eps = comp.unet(torch.cat([x * c_in] * 2).to(plan.dtype), torch.cat([t_] * 2).to(plan.dtype),
                            encoder_hidden_states=context, return_dict=False)[0].float()
            uncond, cond = eps.chunk(2)
            return x - (uncond + (cond - uncond) * 7.0) * sigma

        latents = sample_euler(model, x, sigmas, disable=True)
        image = comp.vae.decode((latents / comp.vae.config.scaling_factor).to(comp.vae.dtype)).sample
        ((image.float() + 1) / 2).clamp(0, 1).cpu()
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
        server_peak = vm_hwm_mib(server.pid)
    finally:
        server.terminate()
        server.wait(30)

    a_med, b_med = statistics.median(a_times), statistics.median(b_times)
    lines = [
        f"model: {os.path.basename(ckpt)} ({comp.arch}), {args.size}x{args.size}, {args.steps} steps, Euler "
        f"(pipelines/k_sampling.py on both sides), CFG 7, device {plan.description}, {args.runs} interleaved runs",
        f"(a) bare: text encoder + sample_euler + UNet + VAE: median {a_med:.3f} s  runs {[round(x, 3) for x in a_times]}",
        f"(b) POST /sdapi/v1/txt2img                     : median {b_med:.3f} s  runs {[round(x, 3) for x in b_times]}",
        f"ratio b/a: {b_med / a_med:.3f}",
        f"peak RSS (VmHWM): (a) bench process {vm_hwm_mib():.0f} MiB; (b) server process {server_peak:.0f} MiB",
    ]
    print("\n".join(lines))
    append_results("overhead.py", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
