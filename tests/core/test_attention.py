"""Cross-attention optimizations (option cross_attention_optimization, the --opt-* / --xformers flags, upcast_attn),
token merging (tomesd), --opt-channelslast and CPU bfloat16 autocast: what runs, that it is undone after the
request, and that the pictures stay those of the default path within rounding."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from webui.config import parse
from webui.core.models import attention as A
from webui.core.settings import OPTIONS_BY_KEY
from webui.core.types import GenerationRequest, HiresOptions
from webui.state import build_state

# -- the maths --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("q_chunk,kv_chunk", [(1024, None), (64, 8), (7, 5), (300, 77)])
def test_sub_quadratic_equals_sdpa(q_chunk, kv_chunk):
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(4, 300, 40, generator=g), torch.randn(4, 77, 40, generator=g), torch.randn(4, 77, 40, generator=g)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    got = A.efficient_dot_product_attention(q, k, v, 40 ** -0.5, query_chunk_size=q_chunk, kv_chunk_size=kv_chunk)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_sub_quadratic_threshold_rules():
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(2, 64, 8, generator=g), torch.randn(2, 64, 8, generator=g), torch.randn(2, 64, 8, generator=g)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    calls = []

    def memory(device):
        calls.append(device)
        return 1 << 30

    for threshold in (None, 0, 1, 50):
        got = A.sub_quad_attention(q, k, v, 8 ** -0.5, q_chunk_size=16, kv_chunk_size=4, chunk_threshold=threshold,
                                   memory=memory)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert len(calls) == 3  # threshold 0: A1111 never asks for free memory (always chunked)


def test_slice_rules_follow_a1111():
    cpu = torch.device("cpu")
    # InvokeAI off CUDA: 32 MB score slices; 16 rows x 4096 x 4096 x 4 B = 1024 MB -> div 32 -> rows // 32 (min 1)
    assert A.invokeai_slice_rows(16, 4096, 4096, 4, cpu) == 1
    assert A.invokeai_slice_rows(16, 64, 77, 4, cpu) == 16  # fits: one slice
    assert A.invokeai_slice_rows(64, 1024, 1024, 4, cpu) == 64 // 8  # 256 MB -> div 8
    # Doggettx: steps doubling until 2.5x the scores fit the free memory
    assert A.doggettx_slice_rows(16, 64, 64, 4, cpu, memory=lambda d: 1 << 30) == 16
    assert A.doggettx_slice_rows(16, 1024, 1024, 4, cpu, memory=lambda d: 40 << 20) == 16 // 4  # 160 MB / 40 MB
    with pytest.raises(RuntimeError, match="Not enough memory"):
        A.doggettx_slice_rows(16, 4096, 4096, 4, cpu, memory=lambda d: 1 << 20)


def test_upcast_runs_the_attention_in_float32(monkeypatch):
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    attn = Attention(query_dim=16, heads=2, dim_head=8).to(torch.bfloat16).eval()
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, *a, **kw):
        seen.append(q.dtype)
        return real(q, k, v, *a, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    x = torch.randn(1, 6, 16).to(torch.bfloat16)
    out = A.UpcastAttnProcessor(AttnProcessor2_0())(attn, x)
    plain = AttnProcessor2_0()(attn, x)
    assert seen == [torch.float32, torch.bfloat16] and out.dtype == torch.bfloat16 and out.shape == plain.shape


# -- the choice -------------------------------------------------------------------------------------------------------

def test_choices_are_a1111s_and_the_options_table_lists_them():
    assert OPTIONS_BY_KEY["cross_attention_optimization"].choices == A.CHOICES
    assert A.CHOICES == ("Automatic", "xformers", "sdp-no-mem - scaled dot product without memory efficient attention",
                         "sdp - scaled dot product", "sub-quadratic", "V1 - original v1", "InvokeAI", "Doggettx",
                         "None")


def test_choose(monkeypatch):
    flags = A.AttentionOptions
    assert A.choose("Automatic", flags()).name == "sdp" and A.choose(None, flags()).message is None
    assert A.choose("Automatic", flags(opt_sub_quad_attention=True)).name == "sub-quadratic"
    assert A.choose("Automatic", flags(opt_split_attention_v1=True)).name == "V1"
    assert A.choose("Automatic", flags(opt_sdp_no_mem_attention=True)).name == "sdp-no-mem"
    # several flags: A1111's priority order (Doggettx 90 over sub-quadratic 10)
    assert A.choose("Automatic", flags(opt_sub_quad_attention=True, opt_split_attention=True)).name == "Doggettx"
    assert A.choose("Automatic", flags(disable_opt_split_attention=True)).optimization is None
    assert A.choose("None", flags()).optimization is None
    # the option wins over the flags
    assert A.choose("InvokeAI", flags(opt_sub_quad_attention=True)).name == "InvokeAI"
    bad = A.choose("flash-magic", flags())
    assert bad.name == "sdp" and "'flash-magic' is not one of" in bad.message and "using 'sdp" in bad.message
    monkeypatch.setattr(A, "xformers_available", lambda: False)
    monkeypatch.setattr(A, "OPTIMIZATIONS", tuple(
        A.Optimization(o.name, o.label, o.cmd_opt, o.priority, o.make, A.xformers_available if o.name == "xformers"
                       else o.available) for o in A.OPTIMIZATIONS))
    monkeypatch.setattr(A, "BY_TITLE", {o.title: o for o in A.OPTIMIZATIONS})
    for choice in (A.choose("Automatic", flags(xformers=True)), A.choose("xformers", flags())):
        assert choice.name == "sdp" and "xformers package is not installed" in choice.message


def test_flags_from_the_command_line():
    config = parse(["--opt-sub-quad-attention", "--sub-quad-q-chunk-size", "256", "--sub-quad-kv-chunk-size", "64",
                    "--sub-quad-chunk-threshold", "0", "--xformers"])
    opts = A.AttentionOptions.from_config(config)
    assert (opts.opt_sub_quad_attention, opts.xformers, opts.sub_quad_q_chunk_size, opts.sub_quad_kv_chunk_size,
            opts.sub_quad_chunk_threshold) == (True, True, 256, 64, 0)
    proc = A.OPTIMIZATIONS[3].make(opts)
    assert (proc.q_chunk_size, proc.kv_chunk_size, proc.chunk_threshold) == (256, 64, 0)


# -- on a real generation ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def state(tmp_path_factory, models_root):
    import os

    root, _ = models_root
    d = tmp_path_factory.mktemp("att") / "data"
    (d / "models").mkdir(parents=True)
    os.symlink(root / "models" / "Stable-diffusion", d / "models" / "Stable-diffusion")
    return build_state(parse(["--nowebui", "--data-dir", str(d)]), create_demo=False)


@pytest.fixture(scope="module")
def default(state):
    return _gen(state)


def _gen(state, **kw):
    base = dict(prompt="a cat", steps=2, width=64, height=64, seed=11, sampler_name="Euler a", checkpoint="tiny-sd15")
    base.update(kw)
    return state.engine.generate(GenerationRequest(**base))


def _pixels(res, i=0):
    return np.asarray(res.images[i]).astype(int)


def _processors_during(state, **kw):
    """The processor class each attention module of the UNet and VAE ran with during one generation."""
    from diffusers.models.attention_processor import Attention

    comp = state.engine.load(state.engine.resolve_checkpoint(kw.get("checkpoint", "tiny-sd15")))
    seen: dict[str, set] = {"unet": set(), "vae": set()}
    hooks = []
    for part in ("unet", "vae"):
        for m in getattr(comp, part).modules():
            if isinstance(m, Attention):
                hooks.append(m.register_forward_pre_hook(
                    lambda mod, args, part=part: seen[part].add(type(mod.processor).__name__)))
    before = {id(m): m.processor for m in comp.unet.modules() if isinstance(m, Attention)}
    try:
        res = _gen(state, **kw)
    finally:
        for h in hooks:
            h.remove()
    after = {id(m): m.processor for m in comp.unet.modules() if isinstance(m, Attention)}
    assert all(after[k] is v for k, v in before.items())  # the very processor objects back
    return res, seen


@pytest.mark.parametrize("title,processor", [
    ("sdp - scaled dot product", "AttnProcessor2_0"),
    ("sdp-no-mem - scaled dot product without memory efficient attention", "SdpNoMemAttnProcessor"),
    ("sub-quadratic", "SubQuadraticAttnProcessor"),
    ("V1 - original v1", "SlicedAttnProcessor"),
    ("InvokeAI", "MemorySlicedAttnProcessor"),
    ("Doggettx", "MemorySlicedAttnProcessor"),
    ("None", "AttnProcessor"),
])
def test_each_optimization_runs_per_request_and_gives_the_same_picture(state, default, title, processor):
    res, seen = _processors_during(state, override_settings={"cross_attention_optimization": title})
    assert seen == {"unet": {processor}, "vae": {processor}}
    assert np.abs(_pixels(res) - _pixels(default)).max() <= 2


def test_upcast_attn_wraps_the_processor(state, default):
    res, seen = _processors_during(state, override_settings={"upcast_attn": True})
    assert seen["unet"] == {"UpcastAttnProcessor"}
    assert _pixels(res).tobytes() == _pixels(default).tobytes()  # float32 model: the same maths


def test_unknown_value_from_config_json_falls_back_with_a_log_line(state, default, caplog):
    state.settings.set("cross_attention_optimization", "flash-magic")  # as a hand-edited config.json holds it
    try:
        with caplog.at_level(logging.INFO, logger="webui.core.generation.optimizations"):
            res = _gen(state)
            _gen(state, steps=1)
    finally:
        state.settings.set("cross_attention_optimization", "Automatic")
    assert _pixels(res).tobytes() == _pixels(default).tobytes()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'flash-magic' is not one of" in warnings[0] and "using 'sdp" in warnings[0]


def test_override_with_an_unknown_value_is_a_4xx(data_dir):
    from fastapi.testclient import TestClient

    from webui.app import build_app

    app = build_app(parse(["--nowebui", "--api", "--data-dir", str(data_dir), "--skip-load-model-at-start"]))
    with TestClient(app) as client:
        r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                   "override_settings": {"cross_attention_optimization": "bogus"}})
        assert 400 <= r.status_code < 500 and "cross_attention_optimization" in r.text
        r = client.post("/sdapi/v1/options", json={"cross_attention_optimization": "bogus"})
        assert 400 <= r.status_code < 500


# -- token merging --------------------------------------------------------------------------------------------------

def test_token_merging_acts_is_in_the_infotext_and_is_removed_after(state, default):
    comp = state.engine.load(state.engine.resolve_checkpoint("tiny-sd15"))
    classes = {type(m).__name__ for m in comp.unet.modules()}
    merged = _gen(state, override_settings={"token_merging_ratio": 0.5})
    assert "Token merging ratio: 0.5" in merged.infotexts[0]
    assert "Token merging ratio" not in default.infotexts[0] and "Token merging ratio hr" not in merged.infotexts[0]
    assert _pixels(merged).tobytes() != _pixels(default).tobytes()  # tokens were merged
    assert np.abs(_pixels(merged) - _pixels(default)).mean() < 40  # ... and it is still the same picture
    assert {type(m).__name__ for m in comp.unet.modules()} == classes  # no ToMeBlock left
    assert _pixels(_gen(state)).tobytes() == _pixels(default).tobytes()


def test_token_merging_ratio_for_hires_and_img2img(state):
    from PIL import Image

    hires = HiresOptions(scale=1.5, upscaler="Latent", second_pass_steps=1)
    res = _gen(state, hires=hires, denoising_strength=0.5,
               override_settings={"token_merging_ratio": 0.3, "token_merging_ratio_hr": 0.6})
    assert "Token merging ratio: 0.3, Token merging ratio hr: 0.6" in res.infotexts[0]
    res = _gen(state, hires=hires, denoising_strength=0.5, override_settings={"token_merging_ratio": 0.3})
    assert "Token merging ratio: 0.3, Token merging ratio hr: 0.3" in res.infotexts[0]  # A1111: hr falls back
    import io

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 80, 40)).save(buf, format="PNG")
    img2img = dict(mode="img2img", init_images=(buf.getvalue(),), denoising_strength=0.5)
    res = _gen(state, **img2img, override_settings={"token_merging_ratio_img2img": 0.4})
    assert "Token merging ratio: 0.4" in res.infotexts[0]
    # A1111: an overridden token_merging_ratio wins over the img2img option
    res = _gen(state, **img2img, override_settings={"token_merging_ratio_img2img": 0.4, "token_merging_ratio": 0.2})
    assert "Token merging ratio: 0.2" in res.infotexts[0]


# -- channels-last and CPU bfloat16 autocast --------------------------------------------------------------------------

def _state_with(tmp_path, models_root, *flags):
    import os

    root, _ = models_root
    d = tmp_path / "data"
    (d / "models").mkdir(parents=True)
    os.symlink(root / "models" / "Stable-diffusion", d / "models" / "Stable-diffusion")
    return build_state(parse(["--nowebui", "--data-dir", str(d), *flags]), create_demo=False)


def test_opt_channelslast(tmp_path, models_root, default):
    st = _state_with(tmp_path, models_root, "--opt-channelslast")
    res = _gen(st)
    comp = st.engine.current_model()
    conv = next(m for m in comp.unet.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert np.abs(_pixels(res) - _pixels(default)).max() <= 2


def test_precision_autocast_on_cpu_uses_bfloat16(tmp_path, models_root, state, default):
    from webui.core.generation.optimizations import cpu_bf16_supported

    assert state.plan.dtype == torch.float32 and parse([]).precision == "autocast"
    st = _state_with(tmp_path, models_root, "--precision", "autocast")
    if not cpu_bf16_supported():
        assert st.plan.dtype == torch.float32
        pytest.skip("this CPU has no bfloat16 support")
    assert (st.plan.dtype, st.plan.vae_dtype) == (torch.bfloat16, torch.float32)
    seen = []
    comp = st.engine.load(st.engine.resolve_checkpoint("tiny-sd15"))
    hook = comp.unet.conv_in.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    try:
        res = _gen(st)
    finally:
        hook.remove()
    assert set(seen) == {torch.bfloat16}
    diff = np.abs(_pixels(res) - _pixels(default))
    assert diff.max() > 0 and diff.mean() < 3  # bfloat16 maths, the same picture


def test_token_merging_without_tomesd_says_so_and_merges_nothing(state, default, monkeypatch, caplog):
    from webui.core.generation import optimizations

    monkeypatch.setattr(optimizations, "tomesd_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="webui.core.generation.optimizations"):
        res = _gen(state, override_settings={"token_merging_ratio": 0.5})
    assert "Token merging" not in res.infotexts[0]
    assert _pixels(res).tobytes() == _pixels(default).tobytes()
    assert any("tomesd package is not installed" in r.getMessage() for r in caplog.records)
