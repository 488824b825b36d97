"""Checkpoint Merger (A1111 extras.run_modelmerger): formulas tensor by tensor, fp16, discard, VAE baking, inpainting
channels, metadata, config copy, errors, atomic output; the merged file loads and generates; peak memory (slow)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from webui.core.models.merge import MergeError, MergeRequest, merge_checkpoints, read_metadata
from webui.core.models.registry import CheckpointRegistry, HashCache, VaeRegistry, model_hash

POS_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
TOKEN_EMB = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
OUT_BIAS = "model.diffusion_model.out.2.bias"
VAE_KEY = "first_stage_model.decoder.conv_out.weight"


def noisy(sd: dict, seed: int, scale: float = 0.5) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        k: (v * scale + torch.randn(v.shape, generator=g) * 0.1) if v.is_floating_point() else v.clone()
        for k, v in sd.items()
    }


@pytest.fixture(scope="module")
def base_sd(models_root):
    """The session's tiny SD1 checkpoint as a state dict (LDM keys, float32)."""
    _, paths = models_root
    return load_file(paths["SD1"])


@pytest.fixture(scope="module")
def small_sd(base_sd):
    """``base_sd`` with the CLIP vocabulary cut to 1000 rows (60 % of the file): merge tests that do not load the
    result need no full vocabulary, and smaller files keep them fast."""
    return {**base_sd, TOKEN_EMB: base_sd[TOKEN_EMB][:1000].clone()}


def sha256_of(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def abc_sds(small_sd):
    """A, B and C state dicts with keys that exercise A1111's special cases (built once; tests get copies)."""
    a = dict(small_sd)
    a[POS_IDS] = torch.arange(77, dtype=torch.int64)[None]
    a["model_ema.only_in_a"] = torch.full((3,), 2.0)  # 'model' in name, absent from B: stays A's
    a["only_in_a_plain"] = torch.full((2,), 5.0)  # no 'model' in name: never merged
    b = noisy(small_sd, 2)
    b[POS_IDS] = torch.zeros(1, 77, dtype=torch.int64)  # A1111 never merges position_ids
    b["model_ema.only_in_b"] = torch.ones(4)  # only in B: dropped
    b["only_in_a_plain"] = torch.full((2,), 9.0)
    c = noisy(small_sd, 3)
    del c[OUT_BIAS]  # B has it, C not: B - C is zeros there
    return a, b, c


@pytest.fixture
def env(tmp_path, abc_sds):
    """models/Stable-diffusion with A, B, C in A1111's layout; registries over it."""
    ckpt = tmp_path / "models" / "Stable-diffusion"
    vae_dir = tmp_path / "models" / "VAE"
    ckpt.mkdir(parents=True)
    vae_dir.mkdir(parents=True)
    a, b, c = (dict(sd) for sd in abc_sds)
    paths = {}
    for name, sd, meta in (("a", a, {"modelspec.title": "model A"}), ("b", b, {}), ("c", c, {})):
        paths[name] = str(ckpt / f"{name}.safetensors")
        save_file(sd, paths[name], metadata={"format": "pt", **meta})
    registry = CheckpointRegistry(str(ckpt), hash_cache=HashCache(str(tmp_path / "cache.json")))
    registry.refresh()
    vae_registry = VaeRegistry(str(vae_dir), str(ckpt))
    return SimpleNamespace(
        ckpt=ckpt,
        vae_dir=vae_dir,
        a=a,
        b=b,
        c=c,
        paths=paths,
        registry=registry,
        vae_registry=vae_registry,
        tmp=tmp_path,
    )


def merge(env, **kw):
    kw.setdefault("primary_model_name", "a.safetensors")
    kw.setdefault("secondary_model_name", "b.safetensors")
    return merge_checkpoints(MergeRequest(**kw), env.registry, env.vae_registry)


def a1111_weighted_sum(a, b, m):
    return ((1 - m) * a) + (m * b)


def a1111_add_difference(a, b, c, m):
    return a + (m * (b - c))


# --- formulas ----------------------------------------------------------------------------------------------------


def test_weighted_sum_equals_a1111_formula_tensor_by_tensor(env):
    res = merge(env, interp_method="Weighted sum", multiplier=0.3)
    assert res.filename == str(env.ckpt / "0.7(a) + 0.3(b).safetensors")
    assert res.message == "Checkpoint saved to " + res.filename
    out = load_file(res.filename)
    assert set(out) == set(env.a)  # B-only key dropped, A-only keys kept
    merged = 0
    for k, va in env.a.items():
        if "model" in k and k in env.b and k != POS_IDS:
            assert torch.equal(out[k], a1111_weighted_sum(va, env.b[k], 0.3)), k  # bit-identical
            merged += 1
        else:
            assert torch.equal(out[k], va), k
    assert merged == len(env.a) - 3
    assert out[POS_IDS].dtype == torch.int64 and torch.equal(out[POS_IDS], env.a[POS_IDS])
    assert torch.equal(out["only_in_a_plain"], torch.full((2,), 5.0))
    assert not any(name.endswith(".tmp") for name in os.listdir(env.ckpt))


def test_add_difference_equals_a1111_formula_and_missing_c_key_adds_nothing(env):
    res = merge(env, interp_method="Add difference", multiplier=0.45, tertiary_model_name="c")
    assert os.path.basename(res.filename) == "a + 0.45(b - c).safetensors"
    out = load_file(res.filename)
    for k, va in env.a.items():
        if "model" in k and k in env.b and k != POS_IDS:
            expected = (
                a1111_add_difference(va, env.b[k], env.c[k], 0.45) if k in env.c else va + 0.45 * torch.zeros_like(va)
            )
            assert torch.equal(out[k], expected), k
        else:
            assert torch.equal(out[k], va), k
    assert torch.equal(out[OUT_BIAS], env.a[OUT_BIAS])


def test_pickled_inputs_and_old_key_names_merge_like_a1111(env):
    # B as a .ckpt ({"state_dict": ...}) with pre-"text_model." CLIP key names: A1111's read_state_dict renames them.
    old = {
        k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
        for k, v in env.b.items()
    }
    torch.save({"state_dict": old, "global_step": 5}, env.ckpt / "old.ckpt")
    env.registry.refresh()
    res = merge(
        env,
        secondary_model_name="old.ckpt",
        interp_method="Add difference",
        multiplier=0.3,
        tertiary_model_name="c.safetensors",
    )
    out = load_file(res.filename)
    assert torch.equal(out[TOKEN_EMB], a1111_add_difference(env.a[TOKEN_EMB], env.b[TOKEN_EMB], env.c[TOKEN_EMB], 0.3))
    assert torch.equal(out[CONV_IN], a1111_add_difference(env.a[CONV_IN], env.b[CONV_IN], env.c[CONV_IN], 0.3))
    assert not any(k.startswith("cond_stage_model.transformer.embeddings.") for k in out)


@pytest.mark.parametrize("interp", ["Weighted sum", "Add difference"])
def test_mixed_dtypes_promote_as_a1111_arithmetic_does(env, interp):
    # A in fp16, B in fp32, an int64 counter and a bf16 tensor: the result has torch's promoted dtype, as A1111's
    # out-of-place expressions give, whatever the file header had to announce before the data was computed
    extra_a = {
        "model.mixed": torch.linspace(-1, 1, 6).half(),
        "model.count": torch.tensor([3, 4], dtype=torch.int64),
        "model.bf": torch.ones(5, dtype=torch.bfloat16),
    }
    extra_b = {
        "model.mixed": torch.linspace(0, 2, 6),
        "model.count": torch.tensor([10, 20], dtype=torch.int64),
        "model.bf": torch.full((5,), 3.0),
    }
    extra_c = {
        "model.mixed": torch.full((6,), 0.5).half(),
        "model.count": torch.tensor([1, 1], dtype=torch.int64),
        "model.bf": torch.full((5,), 1.0, dtype=torch.bfloat16),
    }
    for name, sd, extra in (("a", env.a, extra_a), ("b", env.b, extra_b), ("c", env.c, extra_c)):
        sd.update(extra)
        save_file(sd, env.paths[name])
    env.registry.refresh()
    res = merge(env, interp_method=interp, tertiary_model_name="c", multiplier=0.25, custom_name="mixed")
    out = load_file(res.filename)
    for k, va in extra_a.items():
        if interp == "Weighted sum":
            expected = a1111_weighted_sum(va, extra_b[k], 0.25)
        else:
            expected = a1111_add_difference(va, extra_b[k], extra_c[k], 0.25)
        assert out[k].dtype == expected.dtype and torch.equal(out[k], expected), k
    assert out["model.mixed"].dtype == torch.float32 and out["model.count"].dtype == torch.float32


def test_no_interpolation_converts_and_halves_float32_only(env):
    env.a["model.diffusion_model.bf16"] = torch.ones(3, dtype=torch.bfloat16)
    save_file(env.a, env.paths["a"], metadata={"format": "pt"})
    env.registry.refresh()
    res = merge(
        env, interp_method="No interpolation", secondary_model_name=None, save_as_half=True, checkpoint_format="ckpt"
    )
    assert os.path.basename(res.filename) == "a.ckpt"
    out = torch.load(res.filename, weights_only=True)
    assert set(out) == set(env.a)  # A1111 torch.save(theta_0): the flat dict
    for k, v in env.a.items():
        if v.dtype == torch.float32:
            assert out[k].dtype == torch.float16 and torch.equal(out[k], v.half()), k
        else:
            assert out[k].dtype == v.dtype and torch.equal(out[k], v), k
    assert res.metadata == {}


def test_save_as_half_with_weighted_sum_halves_only_merged_keys(env):
    # A1111 quirk kept: to_half runs inside the merge loop, so keys that were not merged stay float32
    out = load_file(merge(env, save_as_half=True, custom_name="half").filename)
    assert out[CONV_IN].dtype == torch.float16
    assert torch.equal(out[CONV_IN], a1111_weighted_sum(env.a[CONV_IN], env.b[CONV_IN], 0.3).half())
    assert out["only_in_a_plain"].dtype == torch.float32
    assert out["model_ema.only_in_a"].dtype == torch.float32


def test_discard_weights_regex(env):
    out = load_file(merge(env, discard_weights=r"^model_ema\.|decoder\.conv_out", custom_name="d").filename)
    assert "model_ema.only_in_a" not in out and VAE_KEY not in out
    assert "first_stage_model.decoder.conv_out.bias" not in out
    assert set(out) == {k for k in env.a if not (k.startswith("model_ema.") or "decoder.conv_out" in k)}


# --- VAE ---------------------------------------------------------------------------------------------------------


def _vae_file(env, layout: str) -> tuple[str, dict]:
    """A VAE file in the given layout; returns its name and the checkpoint keys it should produce."""
    g = torch.Generator().manual_seed(7)
    ldm = {
        k[len("first_stage_model.") :]: torch.randn(v.shape, generator=g)
        for k, v in env.a.items()
        if k.startswith("first_stage_model.")
    }
    expected = {"first_stage_model." + k: v for k, v in ldm.items()}
    if layout == "bare":
        sd = {**ldm, "loss.logvar": torch.zeros(1), "model_ema.decay": torch.tensor(0.9)}
    elif layout == "prefixed":
        sd = dict(expected)
    else:  # diffusers
        from webui.core.models import ldm_layout
        from webui.core.models.demo_model import _tiny_vae

        vae, cfg = _tiny_vae()
        sd = {k: torch.randn(v.shape, generator=g) for k, v in vae.state_dict().items()}
        expected = ldm_layout.vae_to_ldm(sd, cfg)
    name = f"tiny-{layout}.safetensors"
    save_file(sd, str(env.vae_dir / name))
    env.vae_registry.refresh()
    return name, expected


@pytest.mark.parametrize("layout", ["bare", "prefixed", "diffusers"])
def test_baked_vae_keys_equal_the_vae_file(env, layout):
    name, expected = _vae_file(env, layout)
    res = merge(env, bake_in_vae=name, save_as_half=True, custom_name=f"baked-{layout}")
    out = load_file(res.filename)
    vae_keys = [k for k in out if k.startswith("first_stage_model.")]
    assert vae_keys and set(vae_keys) == set(expected)
    for k in vae_keys:
        assert out[k].dtype == torch.float16
        assert torch.equal(out[k], expected[k].half()), k
    assert "first_stage_model.loss.logvar" not in out
    assert torch.equal(out[CONV_IN], a1111_weighted_sum(env.a[CONV_IN], env.b[CONV_IN], 0.3).half())
    assert json.loads(res.metadata["sd_merge_recipe"])["bake_in_vae"] == name


def test_unknown_vae_lists_the_choices(env):
    _vae_file(env, "bare")
    with pytest.raises(MergeError, match="tiny-bare.safetensors"):
        merge(env, bake_in_vae="nope.safetensors")


# --- inpainting / instruct-pix2pix -------------------------------------------------------------------------------


@pytest.mark.parametrize("channels, suffix", [(9, "inpainting"), (8, "instruct-pix2pix")])
def test_inpainting_and_ip2p_a_merges_first_four_channels(env, channels, suffix):
    g = torch.Generator().manual_seed(11)
    w = env.a[CONV_IN]
    extra = torch.randn(w.shape[0], channels - 4, *w.shape[2:], generator=g)
    env.a[CONV_IN] = torch.cat([w, extra], dim=1)
    save_file(env.a, str(env.ckpt / "inp.safetensors"))
    env.registry.refresh()
    res = merge(env, primary_model_name="inp.safetensors", multiplier=0.25)
    assert os.path.basename(res.filename) == f"0.75(inp) + 0.25(b).{suffix}.safetensors"
    assert res.is_inpainting == (suffix == "inpainting") and res.is_instruct_pix2pix == (suffix != "inpainting")
    out = load_file(res.filename)
    assert out[CONV_IN].shape == env.a[CONV_IN].shape
    assert torch.equal(out[CONV_IN][:, :4], a1111_weighted_sum(w, env.b[CONV_IN], 0.25))
    assert torch.equal(out[CONV_IN][:, 4:], extra)
    recipe = json.loads(res.metadata["sd_merge_recipe"])
    assert recipe["is_inpainting"] == (suffix == "inpainting")
    assert recipe["is_instruct_pix2pix"] == (suffix != "inpainting")

    # B as the inpainting model: refused with A1111's message, nothing written
    before = sorted(os.listdir(env.ckpt))
    with pytest.raises(MergeError, match=f"A must be the {suffix} model"):
        merge(env, primary_model_name="b.safetensors", secondary_model_name="inp.safetensors", custom_name="x")
    assert sorted(os.listdir(env.ckpt)) == before


# --- metadata ----------------------------------------------------------------------------------------------------


def test_metadata_recipe_and_models_exactly_as_a1111_writes_them(env):
    # B is itself a merge: its recipe and models nest into the new sd_merge_models, as in A1111
    b_recipe = {"type": "webui", "primary_model_hash": "1" * 64, "interp_method": "Weighted sum"}
    b_models = {"2" * 64: {"name": "older.safetensors", "legacy_hash": "abcdef12", "sd_merge_recipe": None}}
    save_file(
        env.b,
        env.paths["b"],
        metadata={
            "format": "pt",
            "sd_merge_recipe": json.dumps(b_recipe),
            "sd_merge_models": json.dumps(b_models),
            "modelspec.author": "B",
        },
    )
    env.registry.refresh()
    res = merge(
        env,
        interp_method="Add difference",
        tertiary_model_name="c",
        multiplier=0.5,
        custom_name="mix",
        discard_weights="only_in",
        metadata_json='{"modelspec.title": "mine", "n": 3}',
    )
    sha = {n: sha256_of(p) for n, p in env.paths.items()}
    legacy = {n: model_hash(p) for n, p in env.paths.items()}
    recipe = {
        "type": "webui",
        "primary_model_hash": sha["a"],
        "secondary_model_hash": sha["b"],
        "tertiary_model_hash": sha["c"],
        "interp_method": "Add difference",
        "multiplier": 0.5,
        "save_as_half": False,
        "custom_name": "mix",
        "config_source": 0,
        "bake_in_vae": "None",
        "discard_weights": "only_in",
        "is_inpainting": False,
        "is_instruct_pix2pix": False,
    }
    models = {
        sha["a"]: {"name": "a.safetensors", "legacy_hash": legacy["a"], "sd_merge_recipe": None},
        sha["b"]: {"name": "b.safetensors", "legacy_hash": legacy["b"], "sd_merge_recipe": b_recipe},
        **b_models,
        sha["c"]: {"name": "c.safetensors", "legacy_hash": legacy["c"], "sd_merge_recipe": None},
    }
    assert res.metadata["sd_merge_recipe"] == json.dumps(recipe)
    assert res.metadata["sd_merge_models"] == json.dumps(models)
    assert res.metadata["format"] == "pt"
    assert res.metadata["modelspec.title"] == "mine"  # the user's JSON wins over A's copied field
    assert res.metadata["modelspec.author"] == "B"  # copied from B
    assert res.metadata["n"] == "3"  # non-string values are written as JSON text (A1111's save_file would raise)
    with safe_open(res.filename, "pt") as f:
        assert f.metadata() == dict(res.metadata)
    # the new checkpoint is listed at once, hashed
    assert res.checkpoint.title == f"mix.safetensors [{sha256_of(res.filename)[:10]}]"
    assert env.registry.resolve("mix") == res.checkpoint
    assert json.loads(read_metadata(env.registry, ["mix.safetensors", None, "nope"]))["modelspec.author"] == "B"


def test_metadata_switches(env):
    res = merge(env, add_merge_recipe=False, copy_metadata_fields=False, custom_name="plain")
    assert res.metadata == {"format": "pt"}
    res = merge(env, save_metadata=False, custom_name="bare")
    assert res.metadata == {}
    with safe_open(res.filename, "pt") as f:
        assert not f.metadata()


# --- config, names, errors, atomic write -------------------------------------------------------------------------


@pytest.mark.parametrize("source, expected", [(0, "a"), (1, "b"), (2, None), (3, None)])
def test_copy_config(env, source, expected):
    for n in ("a", "b"):
        (env.ckpt / f"{n}.yaml").write_text(f"config of {n}\n")
    res = merge(env, config_source=source, custom_name="cfg")
    yaml = env.ckpt / "cfg.yaml"
    if expected is None:
        assert res.config_filename is None and not yaml.exists()
    else:
        assert res.config_filename == str(yaml) and yaml.read_text() == f"config of {expected}\n"
        assert res.checkpoint.config == str(yaml)


def test_errors_are_clear_and_write_nothing(env):
    before = sorted(os.listdir(env.ckpt))
    cases = [
        ({"primary_model_name": ""}, "requires a primary model"),
        ({"secondary_model_name": None}, "requires a secondary model"),
        ({"interp_method": "Add difference"}, r"Interpolation method \(Add difference\) requires a tertiary model"),
        ({"secondary_model_name": "missing"}, "b.safetensors"),  # unknown name lists the titles
        ({"interp_method": "Sum"}, "Weighted sum"),
        ({"checkpoint_format": "bin"}, "safetensors"),
        ({"discard_weights": "(["}, "regular expression"),
        ({"metadata_json": "{oops"}, "JSON"),
        ({"custom_name": "../escape"}, "inside the checkpoint folder"),
    ]
    for kw, message in cases:
        with pytest.raises(MergeError, match=message):
            merge(env, **kw)
    assert sorted(os.listdir(env.ckpt)) == before


def test_failed_write_leaves_no_file(env, monkeypatch):
    import webui.core.models.merge as merge_mod

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(merge_mod.os, "replace", boom)
    before = sorted(os.listdir(env.ckpt))
    with pytest.raises(OSError, match="disk full"):
        merge(env, custom_name="never")
    assert sorted(os.listdir(env.ckpt)) == before


def test_output_overwrites_an_input_safely(env):
    # custom name = A's own name: A is read while the new file is written beside it, then replaced
    res = merge(env, custom_name="a", multiplier=0.5)
    out = load_file(res.filename)
    assert res.filename == env.paths["a"]
    assert torch.equal(out[CONV_IN], a1111_weighted_sum(env.a[CONV_IN], env.b[CONV_IN], 0.5))


# --- the merged file is a working checkpoint ---------------------------------------------------------------------


def test_merged_file_loads_and_generates(tmp_path, models_root, base_sd):
    from webui.config import parse
    from webui.core.models.loader import load_components
    from webui.core.types import GenerationRequest
    from webui.state import build_state

    _, paths = models_root
    data = tmp_path / "webui-data"
    ckpt = data / "models" / "Stable-diffusion"
    ckpt.mkdir(parents=True)
    os.symlink(paths["SD1"], ckpt / "tiny-sd15.safetensors")
    save_file(noisy(base_sd, 5), str(ckpt / "other.safetensors"))
    state = build_state(parse(["--nowebui", "--data-dir", str(data)]), create_demo=False)

    res = merge_checkpoints(
        MergeRequest(primary_model_name="tiny-sd15", secondary_model_name="other", multiplier=0.4, save_as_half=True),
        state.registry,
        state.vae_registry,
    )
    title = res.checkpoint.title
    assert title in state.registry.titles()

    comp = load_components(res.checkpoint, state.plan, str(tmp_path / "tok"))
    assert comp.arch == "SD1"
    merged = load_file(res.filename)
    assert torch.equal(comp.unet.conv_in.weight.detach().to(torch.float16), merged[CONV_IN])

    out = state.engine.generate(
        GenerationRequest(prompt="a cat", steps=2, width=64, height=64, seed=1, sampler_name="Euler", checkpoint=title)
    )
    assert out.images[0].size == (64, 64)
    assert "Model: 0.6(tiny-sd15) + 0.4(other)," in out.infotexts[0]


# --- peak memory (slow: writes two ~500 MB checkpoints) ----------------------------------------------------------

_RSS_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    d = sys.argv[1]
    import torch
    from webui.core.models.registry import CheckpointRegistry, HashCache
    from webui.core.models.merge import MergeRequest, merge_checkpoints
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reg = CheckpointRegistry(d, hash_cache=HashCache(None))
    reg.refresh()
    t = time.time()
    merge_checkpoints(MergeRequest(primary_model_name="a.safetensors", secondary_model_name="b.safetensors",
                                   multiplier=0.5, custom_name="out"), reg)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"baseline_mib": base / 1024, "peak_mib": peak / 1024, "seconds": time.time() - t}))
    """
)

_WRITE_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from safetensors.torch import save_file
    for seed, path in enumerate(sys.argv[1:]):
        g = torch.Generator().manual_seed(seed)
        sd = {"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight":
              torch.randn(49408, 768, generator=g)}  # SD1's largest tensor, 151 MB in float32
        total, i = sd[next(iter(sd))].numel() * 4, 0
        while total < 500 * 2**20:
            shape = [(1280, 1280, 3, 3), (640, 640, 3, 3), (1280, 1280), (320, 320, 3, 3), (1280,)][i % 5]
            t = torch.randn(*shape, generator=g)
            sd[f"model.diffusion_model.input_blocks.{i}.0.weight"] = t
            total += t.numel() * 4
            i += 1
        save_file(sd, path, metadata={"format": "pt"})
        del sd
    """
)


@pytest.mark.slow
def test_peak_rss_merging_two_500mb_checkpoints(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    subprocess.run([sys.executable, "-c", _WRITE_SCRIPT, a, b], check=True, env=env)
    size = os.path.getsize(a)
    try:
        run = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, str(tmp_path)], check=True, env=env, capture_output=True, text=True
        )
        numbers = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"\ninputs 2 x {size / 2**20:.0f} MiB: {numbers}")
        grown = (numbers["peak_mib"] - numbers["baseline_mib"]) * 2**20
        # A1111 holds A, B and the result (about 3 x the file size); streaming holds a few tensors
        assert grown < size
        assert load_file(str(tmp_path / "out.safetensors")).keys() == load_file(a).keys()
    finally:
        for p in tmp_path.glob("*.safetensors"):
            p.unlink()
