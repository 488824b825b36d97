"""Soft inpainting (A1111 1.10's built-in extension) as an always-on img2img script: A1111's argument list, nothing
changed when disabled, A1111's blend formula and infotext keys when enabled, its alwayson_scripts entry over the API
(tiny checkpoints, real loader, CPU)."""

from __future__ import annotations

import base64
import json
import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from webui.app import build_app
from webui.config import parse
from webui.core.generation import soft_inpainting as si
from webui.core.io.infotext import parse_generation_parameters
from webui.core.types import GenerationRequest, InpaintOptions
from webui.plugins.builtin.scripts.soft_inpainting import ScriptSoftInpainting
from webui.state import build_state

ON = [True, 1, 0.5, 4, 0, 0.5, 2]


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _init(w=64, h=48) -> Image.Image:
    image = Image.linear_gradient("L").convert("RGB").resize((w, h))
    ImageDraw.Draw(image).ellipse((w // 6, h // 6, w * 5 // 6, h * 5 // 6), fill=(200, 40, 40))
    return image


def _mask(w=64, h=48) -> Image.Image:
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).rectangle((w // 4, h // 4, w * 3 // 4, h * 3 // 4), fill=255)
    return mask


@pytest.fixture
def state(data_dir):
    return build_state(parse(["--nowebui", "--data-dir", str(data_dir)]), create_demo=False)


def _inpaint(state, soft=None, w=64, h=48, **inpaint):
    runner = state.scripts_img2img
    alwayson = {"Soft Inpainting": soft} if soft is not None else {}
    inp = dict(mask=_png(_mask(w, h)), mask_blur_x=4, mask_blur_y=4, inpaint_full_res=False, inpainting_fill=1)
    inp.update(inpaint)
    req = GenerationRequest(mode="img2img", prompt="a cat", steps=4, width=w, height=h, seed=7,
                            sampler_name="Euler", denoising_strength=0.75, init_images=(_png(_init(w, h)),),
                            inpaint=InpaintOptions(**inp),
                            extension_args={"script_args": runner.script_args(None, None, alwayson)})
    return state.engine.generate(req)


def _a1111_latent_blend(detail, a, b, t):
    """A1111 soft_inpainting.latent_blend written out: lerp, then magnitudes (|a|^d (1-t) + |b|^d t)^(1/d)."""
    t2, t3 = t.unsqueeze(0), t[0][None, None]
    interp = a * (1 - t2) + b * t2
    current = torch.linalg.vector_norm(interp, dim=1, keepdim=True).double() + 0.00001
    na = torch.linalg.vector_norm(a, dim=1, keepdim=True).double()
    nb = torch.linalg.vector_norm(b, dim=1, keepdim=True).double()
    desired = (na**detail * (1 - t3) + nb**detail * t3) ** (1 / detail)
    return interp * (desired / current).float()


def test_argument_list_is_a1111s():
    script = ScriptSoftInpainting()
    assert script.title() == "Soft Inpainting"
    assert script.show(False) is False and repr(script.show(True)) == "AlwaysVisible"
    args = [(a.label, a.value, a.minimum, a.maximum, a.step) for a in script.ui(True)]
    assert args == [
        ("Soft inpainting", False, None, None, None),
        ("Schedule bias", 1, 0, 8, 0.1),
        ("Preservation strength", 0.5, 0, 8, 0.05),
        ("Transition contrast boost", 4, 1, 32, 0.5),
        ("Mask influence", 0, 0, 1, 0.05),
        ("Difference threshold", 0.5, 0, 8, 0.25),
        ("Difference contrast", 2, 0, 8, 0.25),
    ]
    assert [type(a.value) for a in script.ui(True)] == [bool, int, float, int, int, float, int]  # A1111's default
    assert script.paste_field_names == [
        "Soft inpainting enabled", "Soft inpainting schedule bias", "Soft inpainting preservation strength",
        "Soft inpainting transition contrast boost", "Soft inpainting mask influence",
        "Soft inpainting difference threshold", "Soft inpainting difference contrast"]


def test_blend_is_a1111s_formula():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 4, 5, 6, generator=g), torch.randn(2, 4, 5, 6, generator=g)
    nmask = torch.rand(1, 5, 6, generator=g).repeat(4, 1, 1)
    sigma = torch.tensor([2.5, 2.5])
    settings = si.SoftInpaintingSettings(1.3, 0.5, 4, 0, 0.5, 2)
    t = nmask ** (2.5**1.3 * 0.5)
    assert torch.allclose(si.get_modified_nmask(settings, nmask, sigma[0]), t)
    out = si.soft_blend(settings, a.clone(), b.clone(), nmask, sigma)
    assert torch.allclose(out, _a1111_latent_blend(4, a, b, t), atol=1e-6)
    # t = 0 keeps a, t = 1 gives b (up to the 1e-5 guard of the magnitude)
    assert torch.allclose(si.latent_blend(settings, a.clone(), b.clone(), torch.zeros(4, 5, 6)), a, atol=1e-4)
    assert torch.allclose(si.latent_blend(settings, a.clone(), b.clone(), torch.ones(4, 5, 6)), b, atol=1e-4)


def _a1111_histogram_filter(img, kernel, center, pmin, pmax, min_width):
    """A1111 weighted_histogram_filter's pixel loop, condensed (same order of sums)."""
    out = img.copy()
    for idx in np.ndindex(img.shape):
        lo = np.maximum(0, np.array(idx) - center)
        hi = np.minimum(img.shape, np.array(idx) - center + np.array(kernel.shape))
        vals = []
        for w in np.ndindex(tuple(hi - lo)):
            ii = np.array(w) + lo
            vals.append([img[tuple(ii)], kernel[tuple(ii - np.array(idx) + center)], 0.0, 0.0])
        vals.sort(key=lambda v: v[0])
        total = 0
        for v in vals:
            v[2] = total
            total += v[1]
            v[3] = total
        wmin, wmax = total * pmin, total * pmax
        if wmax - wmin < min_width:
            c = (wmin + wmax) / 2
            wmin, wmax = c - min_width / 2, c + min_width / 2
            if wmax > total:
                wmax, wmin = total, total - min_width
            if wmin < 0:
                wmin, wmax = 0, min_width
        value = weight = 0
        for v in vals:
            if wmin >= v[3]:
                continue
            if wmax <= v[2]:
                break
            w = min(wmax, v[3]) - max(wmin, v[2])
            value += v[0] * w
            weight += w
        out[idx] = value / weight if weight != 0 else 0
    return out


def test_histogram_filter_equals_a1111s_loop():
    rng = np.random.default_rng(1)
    img = rng.random((7, 9)).astype(np.float32)
    img[2, 3] = img[2, 4]  # a tie
    kernel, center = si.get_gaussian_kernel(stddev_radius=1.5, max_radius=2)
    for pmin, pmax in ((0.9, 1), (0.25, 0.75), (0.0, 0.0)):
        ours = si.weighted_histogram_filter(img, kernel, center, pmin, pmax, 1)
        assert np.array_equal(ours, _a1111_histogram_filter(img, kernel, center, pmin, pmax, 1))


def test_disabled_changes_nothing_byte_for_byte(state):
    plain = _inpaint(state)
    off = _inpaint(state, soft=[False, 1, 0.5, 4, 0, 0.5, 2])
    assert np.array_equal(np.asarray(plain.images[0]), np.asarray(off.images[0]))
    assert plain.infotexts == off.infotexts
    assert "Soft inpainting" not in off.infotexts[0]


def test_enabled_blends_softly_and_writes_a1111s_infotext(state):
    hard = _inpaint(state)
    soft = _inpaint(state, soft=ON)
    assert not np.array_equal(np.asarray(hard.images[0]), np.asarray(soft.images[0]))
    params = parse_generation_parameters(soft.infotexts[0])
    assert params["Soft inpainting enabled"] == "True"
    assert (params["Soft inpainting schedule bias"], params["Soft inpainting preservation strength"],
            params["Soft inpainting transition contrast boost"], params["Soft inpainting mask influence"],
            params["Soft inpainting difference threshold"], params["Soft inpainting difference contrast"]) == (
        "1", "0.5", "4", "0", "0.5", "2")
    # far from the mask (latent mask 0: the latent is kept) the composite keeps the original pixels
    soft = _inpaint(state, soft=ON, w=160, h=128)
    src, out = np.asarray(_init(160, 128)).astype(int), np.asarray(soft.images[0].convert("RGB")).astype(int)
    assert np.abs(out[:, :6] - src[:, :6]).max() <= 4  # (A1111 blurs the composite mask by 4 px)
    inside = np.abs(out[56:72, 72:88] - src[56:72, 72:88]).mean()
    assert inside > 10  # and the masked middle was repainted
    # "Only masked" too: the composite is pasted back at its box
    full = _inpaint(state, soft=ON, inpaint_full_res=True, inpaint_full_res_padding=4)
    assert full.images[0].size == (64, 48) and "Soft inpainting enabled: True" in full.infotexts[0]


def test_soft_blend_runs_in_every_step_and_skips_the_final_blend(state, monkeypatch):
    calls = []
    real = si.soft_blend

    def spy(settings, a, b, nmask, sigma):
        calls.append(float(sigma[0]))
        return real(settings, a, b, nmask, sigma)

    monkeypatch.setattr("webui.plugins.builtin.scripts.soft_inpainting.soft_blend", spy)
    _inpaint(state, soft=ON)
    # denoising 0.75 of 4 Euler steps runs 4 of them (A1111 setup_img2img_steps); none for the final blend
    assert len(calls) == 4 and calls == sorted(calls, reverse=True)


def test_api_accepts_the_alwayson_entry_and_lists_it(data_dir):
    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    b64 = lambda im: base64.b64encode(_png(im)).decode()  # noqa: E731
    with TestClient(build_app(config)) as client:
        body = {"prompt": "a cat", "steps": 2, "width": 64, "height": 48, "seed": 3, "sampler_name": "Euler",
                "denoising_strength": 0.7, "init_images": [b64(_init())], "mask": b64(_mask()), "mask_blur": 4,
                "alwayson_scripts": {"Soft Inpainting": {"args": ON}}}
        r = client.post("/sdapi/v1/img2img", json=body)
        assert r.status_code == 200, r.text
        assert "Soft inpainting enabled: True" in r.json()["info"]
        r = client.post("/sdapi/v1/img2img", json={**body, "alwayson_scripts": {"soft inpainting": {"args": [True]}}})
        assert r.status_code == 200, r.text
        assert ("Soft inpainting schedule bias: 1, Soft inpainting preservation strength: 0.5, Soft inpainting "
                "transition contrast boost: 4, Soft inpainting mask influence: 0, Soft inpainting difference "
                "threshold: 0.5, Soft inpainting difference contrast: 2") in r.json()["info"]
        scripts = client.get("/sdapi/v1/scripts").json()
        assert "soft inpainting" in [s.lower() for s in scripts["img2img"]]
        assert "soft inpainting" not in [s.lower() for s in scripts["txt2img"]]
        info = [s for s in client.get("/sdapi/v1/script-info").json()
                if s["name"] == "soft inpainting" and s["is_img2img"]]
        assert [a["label"] for a in info[0]["args"]] == [
            "Soft inpainting", "Schedule bias", "Preservation strength", "Transition contrast boost",
            "Mask influence", "Difference threshold", "Difference contrast"]
        # A1111 apply_infotext: an infotext naming the script's fields sets its args (mentioned_script_args), so a
        # pasted infotext with soft inpainting on turns it on, with its values; the JSON's alwayson entry wins
        on, on_info = r.json()["images"][0], r.json()["info"]
        text = ("a cat\nSteps: 2, Soft inpainting enabled: True, Soft inpainting schedule bias: 1, Soft inpainting "
                "preservation strength: 0.5, Soft inpainting transition contrast boost: 4, Soft inpainting mask "
                "influence: 0, Soft inpainting difference threshold: 0.5, Soft inpainting difference contrast: 2")
        plain = {k: v for k, v in body.items() if k != "alwayson_scripts"}
        r = client.post("/sdapi/v1/img2img", json={**plain, "infotext": text})
        assert r.status_code == 200, r.text
        pixels = lambda b: Image.open(io.BytesIO(base64.b64decode(b))).tobytes()  # noqa: E731
        assert pixels(r.json()["images"][0]) == pixels(on)
        assert json.loads(r.json()["info"])["infotexts"] == json.loads(on_info)["infotexts"]  # same values written
        r = client.post("/sdapi/v1/img2img", json={**plain, "infotext": text.replace("bias: 1,", "bias: 3,")})
        assert "Soft inpainting schedule bias: 3" in r.json()["info"]
        r = client.post("/sdapi/v1/img2img", json={**plain, "infotext": text,
                                                   "alwayson_scripts": {"soft inpainting": {"args": [False]}}})
        assert "Soft inpainting" not in r.json()["info"]
        assert "Soft inpainting" not in client.post("/sdapi/v1/img2img", json=plain).json()["info"]
        # txt2img has no such always-on script, as in A1111
        r = client.post("/sdapi/v1/txt2img", json={"prompt": "a", "steps": 1, "width": 64, "height": 64,
                                                    "alwayson_scripts": {"Soft Inpainting": {"args": ON}}})
        assert r.status_code == 422
