"""Steps per second of textual-inversion training (issue 16), on the tiny demo model or a checkpoint you give.

    .venv/bin/python bench/train.py [--ckpt PATH] [--steps 30] [--size 64] [--batch-size 1] [--images 4]
                                    [--threads N]

Writes a temporary data folder (the demo model unless --ckpt, an embedding made with /create/embedding's code,
``--images`` random images), trains ``--steps`` steps through ``webui.core.train`` (the queue job's code, without the
HTTP layer) with no previews and no copies, and prints the time of the dataset preparation, the steps per second of
the training loop and the first/last five-step loss means. There is no writer of a full-size random SD1.5 checkpoint
in bench/ yet: pass one (or a real SD1.5 file) with --ckpt to measure that size. Not a test: timing belongs here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", help="an SD1.x/SD2.x checkpoint (default: the tiny demo model)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from webui.config import parse
    from webui.core.models.demo_model import write_tiny_checkpoint
    from webui.core.train import common
    from webui.core.train.args import CreateEmbeddingArgs, TrainEmbeddingArgs
    from webui.core.train.textual_inversion import create_embedding, train_embedding
    from webui.state import build_state, training_services

    if args.threads:
        torch.set_num_threads(args.threads)
    data = tempfile.mkdtemp(prefix="bench-train-")
    try:
        ckpt_dir = os.path.join(data, "models", "Stable-diffusion")
        os.makedirs(ckpt_dir)
        if args.ckpt:
            os.symlink(os.path.abspath(args.ckpt), os.path.join(ckpt_dir, os.path.basename(args.ckpt)))
        else:
            write_tiny_checkpoint(os.path.join(ckpt_dir, "tiny-sd15.safetensors"), "SD1", seed=1)
        state = build_state(parse(["--nowebui", "--data-dir", data]), create_demo=False)
        services = training_services(state)
        t0 = time.perf_counter()
        comp = services.model()
        load_s = time.perf_counter() - t0
        create_embedding(services, CreateEmbeddingArgs(name="benchtok", num_vectors_per_token=1,
                                                       overwrite_old=True, init_text="cat"))
        ds = os.path.join(data, "dataset")
        os.makedirs(ds)
        rng = np.random.default_rng(0)
        for i in range(args.images):
            Image.fromarray(rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)).save(
                os.path.join(ds, f"{i}-thing.png"))

        # time the loop apart from the dataset: the first loss call marks the end of the preparation
        marks: list[float] = []
        real = common.diffusion_loss

        def timed(*a, **kw):
            marks.append(time.perf_counter())
            return real(*a, **kw)

        common.diffusion_loss = timed
        t0 = time.perf_counter()
        result = train_embedding(services, TrainEmbeddingArgs(
            embedding_name="benchtok", learn_rate="0.005", batch_size=args.batch_size, data_root=ds,
            training_width=args.size, training_height=args.size, steps=args.steps, create_image_every=0,
            save_embedding_every=0, template_filename="subject.txt"))
        end = time.perf_counter()
        common.diffusion_loss = real
        loop_s = end - marks[0]
        n = len(result.losses)
        print(f"model: {comp.info.name} ({comp.arch}, {comp.unet.device}, {comp.unet.dtype}); load {load_s:.2f} s; "
              f"torch threads {torch.get_num_threads()}")
        print(f"images {args.images} at {args.size}x{args.size}, batch size {args.batch_size}")
        print(f"dataset preparation {marks[0] - t0:.2f} s; {n} steps in {loop_s:.2f} s = {n / loop_s:.2f} steps/s")
        print(f"loss: first 5 mean {np.mean(result.losses[:5]):.5f}, last 5 mean {np.mean(result.losses[-5:]):.5f}")
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
