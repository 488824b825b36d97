"""Sampling speed of the engine vs bare diffusers on the same weights: iterations per second.

    .venv/bin/python bench/vs_diffusers.py --ckpt FILE [--size 512] [--steps 20] [--runs 3]

(a) diffusers' StableDiffusionPipeline / StableDiffusionXLPipeline built from the modules our loader made from the
file, EulerDiscreteScheduler, CFG 7; (b) ``Engine.generate`` (the server's generation path) with sampler Euler on
the same file. Both are timed per sampling step (diffusers' ``callback_on_step_end``, the engine's progress
callback); the figure is the median step after the first. On CUDA the device is synchronised at each step. Prints
it/s of each side and the ratio (target >= 1.0) and appends the table to bench/RESULTS.md. Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--flags", default="", help="launch flags for the engine side, e.g. '--opt-sdp-attention'")
    args = ap.parse_args()

    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    from bench.throughput import append_results
    from webui.config import parse
    from webui.core.queue import ProgressTracker
    from webui.core.types import GenerationRequest
    from webui.state import build_state

    cuda = torch.cuda.is_available()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    data_dir = tempfile.mkdtemp(prefix="bench-vs-")
    st = build_state(parse(["--nowebui", "--data-dir", data_dir, "--ckpt-dir",
                            os.path.dirname(os.path.abspath(args.ckpt)), *args.flags.split()]), create_demo=False)
    name = os.path.splitext(os.path.basename(args.ckpt))[0]
    comp = st.engine.load(st.engine.resolve_checkpoint(name))

    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, prediction_type=comp.prediction_type,
                                       timestep_spacing="leading", steps_offset=1)
    if comp.is_sdxl:
        pipe = StableDiffusionXLPipeline(vae=comp.vae, text_encoder=comp.text_encoder, text_encoder_2=comp.text_encoder_2,
                                         tokenizer=comp.tokenizer, tokenizer_2=comp.tokenizer_2, unet=comp.unet,
                                         scheduler=scheduler)
    else:
        pipe = StableDiffusionPipeline(vae=comp.vae, text_encoder=comp.text_encoder, tokenizer=comp.tokenizer,
                                       unet=comp.unet, scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def diffusers_steps() -> list[float]:
        stamps = []

        def on_step(pipe_, i, t, kwargs):
            sync()
            stamps.append(time.perf_counter())
            return kwargs

        pipe("a photo of a cat", negative_prompt="", num_inference_steps=args.steps, guidance_scale=7.0,
             width=args.size, height=args.size, generator=torch.Generator("cpu").manual_seed(1),
             callback_on_step_end=on_step, output_type="latent")
        return [b - a for a, b in zip(stamps, stamps[1:])]

    def engine_steps() -> list[float]:
        stamps = []

        class Timed(ProgressTracker):
            def step(self, step, steps, latent=None):
                sync()
                stamps.append(time.perf_counter())

        req = GenerationRequest(prompt="a photo of a cat", negative_prompt="", steps=args.steps, width=args.size,
                                height=args.size, seed=1, sampler_name="Euler", cfg_scale=7.0)
        st.engine.generate(req, Timed(options=lambda k: {"live_previews_enable": False}.get(k, 0)))
        return [b - a for a, b in zip(stamps, stamps[1:])]

    diffusers_steps()  # warm-up (kernels, allocator)
    engine_steps()
    a, b = [], []
    for _ in range(args.runs):
        a += diffusers_steps()
        b += engine_steps()
    a_med, b_med = statistics.median(a), statistics.median(b)
    lines = [
        f"model: {os.path.basename(args.ckpt)} ({comp.arch}), {args.size}x{args.size}, {args.steps} steps Euler, "
        f"CFG 7, {st.plan.description}{', flags ' + args.flags if args.flags else ''}, {args.runs} runs",
        f"(a) diffusers pipeline: {1 / a_med:.3f} it/s (median step {a_med:.4f} s)",
        f"(b) engine            : {1 / b_med:.3f} it/s (median step {b_med:.4f} s)",
        f"ratio engine/diffusers it/s: {a_med / b_med:.3f} (target >= 1.0)",
    ]
    print("\n".join(lines))
    append_results("vs_diffusers.py", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
