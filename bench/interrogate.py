"""Time of Interrogate (issue 16 item 5) at full size, on random weights in A1111's file layouts.

    .venv/bin/python bench/interrogate.py [--threads N] [--dict-limit 1500]

Writes a temporary data folder with full-size random files -- BLIP base caption (ViT-B/16 at 384 px + BERT-base
decoder, Salesforce's key layout, with a made-up 30522-entry vocab.txt), OpenAI's ViT-L/14 layout (open_clip's
"ViT-L-14" with QuickGELU, saved as a float16 state dict like OpenAI's) and TorchDeepDanbooru resnet custom v3 (9176
tags) -- then runs the server's Interrogators as ``POST /sdapi/v1/interrogate`` does: load time, the BLIP caption
alone, the whole "clip" interrogation over the four default category lists (clip-interrogator's, as A1111 downloads
them; ``interrogate_clip_dict_limit`` lines each), and DeepDanbooru. Random weights give nonsense words; the time is
what this measures. Not a test: timing belongs here.
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

BLIP_BASE_VISION = {"width": 768, "layers": 12, "patch": 16, "image_size": 384}
BLIP_BASE_TEXT = {"width": 768, "layers": 12, "positions": 512}


def _write_files(data: str) -> None:
    import torch

    from tests.fixtures.deepbooru import write_deepbooru_model
    from tests.fixtures.interrogate import BERT_SPECIALS, blip_original_state_dict

    models = os.path.join(data, "models")
    blip_dir = os.path.join(models, "BLIP")
    os.makedirs(os.path.join(blip_dir, "bert-base-uncased"))
    words = [f"w{i}" for i in range(30522 - len(BERT_SPECIALS))]
    with open(os.path.join(blip_dir, "bert-base-uncased", "vocab.txt"), "w", encoding="utf8") as f:
        f.write("\n".join(BERT_SPECIALS + words) + "\n")
    sd = blip_original_state_dict(0, vision=BLIP_BASE_VISION, text=BLIP_BASE_TEXT, vocab_size=30524)
    torch.save({"model": sd}, os.path.join(blip_dir, "model_base_caption_capfilt_large.pth"))
    del sd

    import open_clip

    clip_dir = os.path.join(models, "CLIP")
    os.makedirs(clip_dir)
    model = open_clip.create_model("ViT-L-14-quickgelu", pretrained=None)
    torch.save({k: (v.half() if v.is_floating_point() and v.ndim >= 2 else v) for k, v in model.state_dict().items()},
               os.path.join(clip_dir, "ViT-L-14.pt"))
    del model

    from webui.core.interrogate.deepbooru_model import Widths  # the full-size network's widths

    write_deepbooru_model(data, [f"tag_{i}" for i in range(9176)], widths=Widths())


def _timed(label: str, fn):
    t0 = time.perf_counter()
    out = fn()
    print(f"{label}: {time.perf_counter() - t0:.2f} s")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--dict-limit", type=int, default=1500, help="interrogate_clip_dict_limit (A1111's default)")
    args = ap.parse_args()

    import torch
    from PIL import Image

    from webui.config import parse
    from webui.state import build_state

    if args.threads:
        torch.set_num_threads(args.threads)
    data = tempfile.mkdtemp(prefix="bench-interrogate-")
    try:
        _timed("write full-size random files", lambda: _write_files(data))
        state = build_state(parse(["--nowebui", "--data-dir", data, "--skip-load-model-at-start"]))
        state.settings.set("interrogate_clip_dict_limit", args.dict_limit)
        it = state.interrogators
        image = Image.new("RGB", (512, 512), (120, 90, 200))
        _timed("load BLIP + CLIP", lambda: it.clip().load())
        _timed("BLIP caption alone", lambda: it.clip().generate_caption(image))
        cats = it.clip().categories()
        print("categories:", ", ".join(f"{c.name} ({min(len(c.items), args.dict_limit or len(c.items))} lines)"
                                       for c in cats))
        _timed("interrogate clip (caption + ranking), first call", lambda: it.interrogate(image, "clip"))
        _timed("interrogate clip, second call (the lines' features cached)", lambda: it.interrogate(image, "clip"))
        ci = it.clip()
        ci.load()
        with torch.no_grad():
            clip_image = ci.clip_preprocess(image).unsqueeze(0).type(ci.dtype).to(ci.device)
            feats = _timed("  of which: CLIP image features", lambda: ci.clip_model.encode_image(clip_image))
            feats = feats / feats.norm(dim=-1, keepdim=True)
            _timed("  of which: ranking the cached lines",
                   lambda: [ci.rank(feats, c.items, c.topn) for c in ci.categories()])
        _timed("  of which: BLIP caption", lambda: ci.generate_caption(image))
        _timed("interrogate deepdanbooru, first call (load)", lambda: it.interrogate(image, "deepdanbooru"))
        _timed("interrogate deepdanbooru, second call", lambda: it.interrogate(image, "deepdanbooru"))
        print(f"device {it.device}, dtype {it.dtype}, torch threads {torch.get_num_threads()}")
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
