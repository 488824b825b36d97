"""Before/after record of ~20 varied generation requests: same request + same seed must give the same bytes.

    .venv/bin/python bench/record_requests.py OUT.json            # record
    .venv/bin/python bench/record_requests.py OUT.json --compare BEFORE.json

Builds a data dir with the tiny random checkpoints of the test fixtures (SD1.5, SD2-v, SDXL, an inpainting model),
a LoRA and a ControlNet model, starts the real app (``--nowebui``) in-process and posts txt2img / img2img requests
(inpaint, hires, refiner, LoRA, ControlNet, batch, variation seeds, schedules, clip skip, styles). For each response
it records the sha256 of every image's pixels, the infotexts and the ``info`` dict minus its job timestamp. Run it
before and after a change of the generation path; ``--compare`` lists every difference and exits 1 on any.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _b64(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _inputs():
    from PIL import Image, ImageDraw

    init = Image.linear_gradient("L").convert("RGB").resize((80, 60))
    ImageDraw.Draw(init).ellipse((10, 10, 50, 40), fill=(200, 40, 40))
    mask = Image.new("L", init.size, 0)
    ImageDraw.Draw(mask).rectangle((20, 15, 50, 40), fill=255)
    control = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(control).ellipse((12, 12, 52, 52), outline="white", width=3)
    return _b64(init), _b64(mask), _b64(control)


def cases() -> list[tuple[str, str, dict]]:
    init, mask, control = _inputs()
    base = {"prompt": "a cat, (sharp:1.2) [blurry]", "negative_prompt": "ugly", "steps": 3, "width": 64,
            "height": 48, "seed": 5, "subseed": 77, "sampler_name": "Euler", "cfg_scale": 7}
    unit = {"enabled": True, "module": "canny", "model": "control_v11p_sd15_canny", "weight": 0.8, "image": control,
            "resize_mode": "Crop and Resize", "processor_res": 64, "threshold_a": 100, "threshold_b": 200,
            "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": "Balanced", "pixel_perfect": False}
    i2i = {**base, "init_images": [init], "denoising_strength": 0.6}
    return [
        ("txt2img-euler", "txt2img", base),
        ("txt2img-dpmpp2m-karras-batch", "txt2img", {**base, "sampler_name": "DPM++ 2M", "scheduler": "karras",
                                                      "batch_size": 2, "n_iter": 2}),
        ("txt2img-sde-variation", "txt2img", {**base, "sampler_name": "DPM++ SDE", "subseed": 9,
                                              "subseed_strength": 0.3}),
        ("txt2img-ddim-editing", "txt2img", {**base, "sampler_name": "DDIM", "steps": 4,
                                             "prompt": "[a dog:a cat:0.5] AND a house :0.5"}),
        ("txt2img-unipc-clipskip", "txt2img", {**base, "sampler_name": "UniPC", "clip_skip": 2}),
        ("txt2img-sd2v", "txt2img", {**base, "override_settings": {"sd_model_checkpoint": "tiny-sd2-v"}}),
        ("txt2img-sdxl", "txt2img", {**base, "override_settings": {"sd_model_checkpoint": "tiny-sdxl"}}),
        ("txt2img-lora", "txt2img", {**base, "prompt": "a cat <lora:mylora:0.8>"}),
        ("txt2img-hires-latent", "txt2img", {**base, "width": 32, "height": 24, "enable_hr": True, "hr_scale": 2,
                                             "hr_upscaler": "Latent", "denoising_strength": 0.5}),
        ("txt2img-hires-lanczos-sampler", "txt2img", {**base, "width": 32, "height": 24, "enable_hr": True,
                                                      "hr_scale": 1.5, "hr_upscaler": "Lanczos",
                                                      "hr_sampler_name": "DPM++ 2M", "hr_second_pass_steps": 2,
                                                      "hr_prompt": "a dog", "denoising_strength": 0.6}),
        ("txt2img-refiner", "txt2img", {**base, "refiner_checkpoint": "tiny-sdxl", "refiner_switch_at": 0.5,
                                        "override_settings": {"sd_model_checkpoint": "tiny-sdxl"}}),
        ("txt2img-sd1-refiner", "txt2img", {**base, "refiner_checkpoint": "tiny-sd2-v", "refiner_switch_at": 0.6}),
        ("txt2img-controlnet", "txt2img", {**base, "width": 64, "height": 64,
                                           "alwayson_scripts": {"controlnet": {"args": [unit]}}}),
        ("txt2img-controlnet-hires", "txt2img", {**base, "width": 64, "height": 64, "enable_hr": True, "hr_scale": 1.5,
                                                 "denoising_strength": 0.5, "alwayson_scripts": {"controlnet": {
                                                     "args": [{**unit, "control_mode": "My prompt is more important"}]}}}),
        ("txt2img-grid-save", "txt2img", {**base, "batch_size": 2, "save_images": True,
                                          "override_settings": {"return_grid": True}}),
        ("img2img", "img2img", i2i),
        ("img2img-resize-fill-cc", "img2img", {**i2i, "resize_mode": 2, "sampler_name": "Heun",
                                               "override_settings": {"img2img_color_correction": True}}),
        ("inpaint-fullres-original", "img2img", {**i2i, "mask": mask, "mask_blur": 2, "inpainting_fill": 1}),
        ("inpaint-whole-latent-noise", "img2img", {**i2i, "mask": mask, "inpainting_fill": 2,
                                                   "inpaint_full_res": False, "batch_size": 2}),
        ("inpaint-fill-invert", "img2img", {**i2i, "mask": mask, "inpainting_fill": 0, "inpainting_mask_invert": 1,
                                            "inpaint_full_res": False}),
        ("img2img-controlnet", "img2img", {**i2i, "width": 64, "height": 64,
                                           "alwayson_scripts": {"controlnet": {"args": [{**unit, "image": None}]}}}),
        ("img2img-lora-sdxl", "img2img", {**i2i, "prompt": "a cat <lora:mylora:0.5>",
                                          "override_settings": {"sd_model_checkpoint": "tiny-sdxl"}}),
    ]


def build_data_dir(root: str) -> None:
    from tests.fixtures.checkpoints import write_fixture_models
    from tests.fixtures.controlnet import write_tiny_controlnet

    write_fixture_models(os.path.join(root, "models"))
    os.makedirs(os.path.join(root, "models", "ControlNet"), exist_ok=True)
    write_tiny_controlnet(os.path.join(root, "models", "ControlNet", "control_v11p_sd15_canny.safetensors"), "SD1",
                          seed=3)


def record() -> dict:
    from fastapi.testclient import TestClient
    from PIL import Image

    from tests.fixtures.networks import SD1_KOHYA_MODULES, write_kohya_lora
    from webui.app import build_app
    from webui.config import parse

    out: dict = {}
    with tempfile.TemporaryDirectory() as root:
        build_data_dir(root)
        config = parse(["--nowebui", "--data-dir", root, "--skip-load-model-at-start"])
        with TestClient(build_app(config)) as client:
            state = client.app.state.webui
            comp = state.engine.load(state.registry.resolve("tiny-sd15"))
            write_kohya_lora(os.path.join(config.lora_dir, "mylora.safetensors"), comp, SD1_KOHYA_MODULES, seed=11)
            client.post("/sdapi/v1/refresh-loras")
            for name, route, body in cases():
                r = client.post(f"/sdapi/v1/{route}", json=body)
                entry: dict = {"status": r.status_code}
                if r.status_code == 200:
                    data = r.json()
                    info = json.loads(data["info"])
                    info.pop("job_timestamp", None)
                    entry["images"] = []
                    for b64 in data["images"]:
                        im = Image.open(io.BytesIO(base64.b64decode(b64)))
                        entry["images"].append(f"{im.mode} {im.size} " + hashlib.sha256(im.tobytes()).hexdigest())
                    entry["info"] = info
                else:
                    entry["error"] = r.text[:300]
                out[name] = entry
                print(f"{name}: {r.status_code} {len(entry.get('images', []))} images", flush=True)
    return out


def compare(after: dict, before: dict) -> list[str]:
    diffs = []
    for name in sorted(set(before) | set(after)):
        a, b = after.get(name), before.get(name)
        if a != b:
            if a is None or b is None:
                diffs.append(f"{name}: only in {'before' if a is None else 'after'}")
                continue
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    diffs.append(f"{name}.{key}: before {json.dumps(b.get(key))[:400]}\n    after {json.dumps(a.get(key))[:400]}")
    return diffs


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--compare", help="a record made before the change")
    args = ap.parse_args()
    data = record()
    with open(args.out, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    if args.compare:
        with open(args.compare) as f:
            diffs = compare(data, json.load(f))
        for d in diffs:
            print("DIFF", d)
        print(f"{len(data)} requests, {len(diffs)} differences")
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
