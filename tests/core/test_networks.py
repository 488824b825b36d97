"""LoRA / LyCORIS on tiny SD1 and SDXL checkpoints loaded through the real loader (A1111 extensions-builtin/Lora).

Expected deltas are computed here by hand from the tensors written to the file (up @ down * alpha / rank * mult,
LoHa's Hadamard product, LoKr's Kronecker product, ...), not through the code under test.
"""

from __future__ import annotations

import hashlib
import json
import os
from types import SimpleNamespace

import pytest
import torch

from tests.fixtures import networks as fx
from webui.core.devices import plan_devices
from webui.core.models.loader import load_components
from webui.core.networks.lora import (
    AppliedNetworks,
    LoraInfo,
    LoraRegistry,
    ModuleIndex,
    NetworkActivation,
    NetworkLoadError,
    activations_from_extra_networks,
    activations_from_params,
    apply_networks,
    load_network,
)
from webui.core.generation.prompts import ExtraNetworkParams, parse_extra_networks
from webui.core.models.registry import HashCache
from webui.core.types import CheckpointInfo

SD1_LINEAR = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
SD1_CONV3 = "lora_unet_down_blocks_0_resnets_0_conv1"
SD1_CONV1 = "lora_unet_down_blocks_0_attentions_0_proj_in"
SD1_TE = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"


def _load(path, tokenizer_dir):
    info = CheckpointInfo(filename=str(path), name=os.path.basename(path), model_name="m")
    return load_components(info, plan_devices(use_cpu=["all"]), tokenizer_dir)


@pytest.fixture(scope="module")
def sd1(models_root, tokenizer_dir):
    return _load(models_root[1]["SD1"], tokenizer_dir)


@pytest.fixture(scope="module")
def sdxl(models_root, tokenizer_dir):
    return _load(models_root[1]["SDXL"], tokenizer_dir)


def _snapshot(comp) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("unet", "text_encoder", "text_encoder_2"):
        model = getattr(comp, name)
        if model is not None:
            out.update({f"{name}.{k}": v.detach().clone() for k, v in model.state_dict().items()})
    return out


def _assert_identical(comp, before):
    after = _snapshot(comp)
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []


def _registry(tmp_path) -> LoraRegistry:
    return LoraRegistry([str(tmp_path / "models" / "Lora"), str(tmp_path / "models" / "LyCORIS")])


def _lora_dir(tmp_path):
    return str(tmp_path / "models" / "Lora")


def _weight(comp, target):
    return fx.module_of(comp, target).weight.detach().clone()


def _lora_delta(sd, key, rank=4):
    """up @ down for a Linear or conv (einsum over the rank), times alpha / rank."""
    down, up = sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"]
    scale = sd[f"{key}.alpha"].item() / rank
    if down.dim() == 4:
        return torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down) * scale
    return (up @ down) * scale


def _close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


# -- loading and key mapping --------------------------------------------------------------------------------------


def test_kohya_sd1_every_module_matched(sd1, tmp_path):
    path = str(tmp_path / "sd1.safetensors")
    fx.write_kohya_lora(path, sd1, fx.SD1_KOHYA_MODULES)
    net = load_network(LoraInfo("sd1", "sd1", path, {}), sd1)
    assert len(net.modules) == len(fx.SD1_KOHYA_MODULES) == 8
    assert net.unmatched_keys == ()
    assert {m.kind for m in net.modules.values()} == {"lora"}
    # each module landed on the very module the hand-written table names
    index = ModuleIndex(sd1)
    for key, target in fx.SD1_KOHYA_MODULES.items():
        assert index.modules[index.kohya[key]] is fx.module_of(sd1, target)


def test_kohya_sdxl_ldm_names_and_both_text_encoders(sdxl, tmp_path):
    path = str(tmp_path / "xl.safetensors")
    fx.write_kohya_lora(path, sdxl, fx.SDXL_KOHYA_MODULES)
    net = load_network(LoraInfo("xl", "xl", path, {}), sdxl)
    assert len(net.modules) == len(fx.SDXL_KOHYA_MODULES) == 14 and net.unmatched_keys == ()
    index = ModuleIndex(sdxl)
    for key, target in fx.SDXL_KOHYA_MODULES.items():
        assert index.modules[index.kohya[key]] is fx.module_of(sdxl, target), key
    assert {c for c, _ in net.modules} == {"unet", "text_encoder", "text_encoder_2"}
    # SD1's "lora_te_" prefix does not exist on SDXL (A1111 matches it only on single-encoder models)
    assert "lora_te_text_model_encoder_layers_0_self_attn_k_proj" not in index.kohya


def test_diffusers_style_unet_names_also_match_on_sdxl(sdxl, tmp_path):
    """Some SDXL trainers write kohya keys with diffusers block names; A1111 converts them to LDM names first."""
    modules = {"lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn2_to_k":
               ("unet", "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k"),
               "lora_unet_up_blocks_0_upsamplers_0_conv": ("unet", "up_blocks.0.upsamplers.0.conv")}
    path = str(tmp_path / "xl-diffusers-names.safetensors")
    fx.write_kohya_lora(path, sdxl, modules)
    assert len(load_network(LoraInfo("x", "x", path, {}), sdxl).modules) == 2


def test_unrecognised_keys_are_counted_not_fatal(sd1, tmp_path):
    path = str(tmp_path / "partly.safetensors")
    sd = fx.write_kohya_lora(path, sd1, {SD1_LINEAR: fx.SD1_KOHYA_MODULES[SD1_LINEAR]})
    sd["lora_unet_no_such_block_to_q.lora_down.weight"] = torch.zeros(4, 32)
    sd["lora_unet_no_such_block_to_q.lora_up.weight"] = torch.zeros(32, 4)
    sd[f"{SD1_CONV3}.something_else"] = torch.zeros(3)  # matched module, but no module type accepts the parts
    from safetensors.torch import save_file

    save_file(sd, path)
    net = load_network(LoraInfo("p", "p", path, {}), sd1)
    assert len(net.modules) == 1
    assert sorted(net.unmatched_keys) == sorted(["lora_unet_no_such_block_to_q.lora_down.weight",
                                                 "lora_unet_no_such_block_to_q.lora_up.weight",
                                                 f"{SD1_CONV3}.something_else"])


def test_corrupt_and_foreign_files_raise_naming_the_file(sd1, tmp_path):
    bad = fx.write_corrupt_network(str(tmp_path / "broken-download.safetensors"))
    with pytest.raises(NetworkLoadError, match="broken-download.safetensors") as e:
        load_network(LoraInfo("b", "b", bad, {}), sd1)
    assert isinstance(e.value, ValueError)
    foreign = str(tmp_path / "not-a-lora.safetensors")
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.x.weight": torch.zeros(2)}, foreign)
    with pytest.raises(NetworkLoadError, match="not-a-lora.safetensors"):
        load_network(LoraInfo("f", "f", foreign, {}), sd1)
    with pytest.raises(NetworkLoadError, match="gone.safetensors"):
        load_network(LoraInfo("g", "g", str(tmp_path / "gone.safetensors"), {}), sd1)


def test_pt_file_loads_through_weights_only(sd1, tmp_path):
    path = str(tmp_path / "old.pt")
    sd = fx.write_kohya_lora(path, sd1, {SD1_LINEAR: fx.SD1_KOHYA_MODULES[SD1_LINEAR]})
    net = load_network(LoraInfo("old", "old", path, {}), sd1)
    assert len(net.modules) == 1
    assert torch.equal(next(iter(net.modules.values())).w["lora_up.weight"], sd[f"{SD1_LINEAR}.lora_up.weight"])


# -- applying --------------------------------------------------------------------------------------------------


def test_patched_weights_equal_base_plus_hand_delta_and_restore(sd1, tmp_path):
    sd = fx.write_kohya_lora(os.path.join(_lora_dir(tmp_path), "style.safetensors"), sd1, fx.SD1_KOHYA_MODULES,
                             rank=4, alpha=2.0)
    reg = _registry(tmp_path)
    reg.refresh()
    before = _snapshot(sd1)
    targets = {k: fx.SD1_KOHYA_MODULES[k] for k in (SD1_LINEAR, SD1_CONV3, SD1_CONV1, SD1_TE)}
    base = {k: _weight(sd1, t) for k, t in targets.items()}
    with apply_networks(sd1, [NetworkActivation("style", te_multiplier=0.7, unet_multiplier=0.6)], reg) as applied:
        assert [(i.name, a.name) for i, a in applied.applied] == [("style", "style")]
        assert applied.missing == [] and applied.errors == []
        for key, target in targets.items():
            mult = 0.7 if key.startswith("lora_te") else 0.6
            _close(_weight(sd1, target), base[key] + _lora_delta(sd, key) * mult)
        assert base[SD1_CONV3].shape[2:] == (3, 3) and base[SD1_CONV1].shape[2:] == (1, 1)
    _assert_identical(sd1, before)


def test_restored_bit_identical_when_body_raises(sdxl, tmp_path):
    fx.write_kohya_lora(os.path.join(_lora_dir(tmp_path), "xl.safetensors"), sdxl, fx.SDXL_KOHYA_MODULES)
    reg = _registry(tmp_path)
    reg.refresh()
    before = _snapshot(sdxl)
    target = fx.SDXL_KOHYA_MODULES["lora_te2_text_model_encoder_layers_0_mlp_fc2"]
    base = _weight(sdxl, target)
    with pytest.raises(RuntimeError, match="interrupted"):
        with apply_networks(sdxl, [NetworkActivation("xl")], reg):
            assert not torch.equal(_weight(sdxl, target), base)
            raise RuntimeError("interrupted")
    _assert_identical(sdxl, before)


def test_two_networks_sum_in_order(sd1, tmp_path):
    d = _lora_dir(tmp_path)
    a = fx.write_kohya_lora(os.path.join(d, "a.safetensors"), sd1, fx.SD1_KOHYA_MODULES, seed=1)
    b = fx.write_kohya_lora(os.path.join(d, "sub", "b.safetensors"), sd1,
                            {SD1_LINEAR: fx.SD1_KOHYA_MODULES[SD1_LINEAR]}, seed=2, rank=2, alpha=1.0)
    reg = _registry(tmp_path)
    before = _snapshot(sd1)
    target = fx.SD1_KOHYA_MODULES[SD1_LINEAR]
    base = _weight(sd1, target)
    acts = [NetworkActivation("a", 1.0, 0.5), NetworkActivation("b", 1.0, 2.0)]
    with apply_networks(sd1, acts, reg) as applied:  # never refreshed: the miss triggers A1111's rescan
        assert [i.name for i, _ in applied.applied] == ["a", "b"]
        _close(_weight(sd1, target), base + _lora_delta(a, SD1_LINEAR) * 0.5 + _lora_delta(b, SD1_LINEAR, rank=2) * 2.0)
    _assert_identical(sd1, before)


def test_te_and_unet_multipliers_land_on_their_modules(sd1, tmp_path):
    sd = fx.write_kohya_lora(os.path.join(_lora_dir(tmp_path), "m.safetensors"), sd1, fx.SD1_KOHYA_MODULES)
    reg = _registry(tmp_path)
    before = _snapshot(sd1)
    base = {k: _weight(sd1, t) for k, t in fx.SD1_KOHYA_MODULES.items()}
    with apply_networks(sd1, [NetworkActivation("m", te_multiplier=0.5, unet_multiplier=0.0)], reg):
        for key in (SD1_TE, "lora_te_text_model_encoder_layers_1_mlp_fc1"):
            _close(_weight(sd1, fx.SD1_KOHYA_MODULES[key]), base[key] + _lora_delta(sd, key) * 0.5)
        now = _snapshot(sd1)
        assert all(torch.equal(now[k], before[k]) for k in before if k.startswith("unet."))
    with apply_networks(sd1, [NetworkActivation("m", te_multiplier=0.0, unet_multiplier=1.0)], reg):
        now = _snapshot(sd1)
        assert all(torch.equal(now[k], before[k]) for k in before if k.startswith("text_encoder."))
        _close(_weight(sd1, fx.SD1_KOHYA_MODULES[SD1_CONV3]), base[SD1_CONV3] + _lora_delta(sd, SD1_CONV3))
    _assert_identical(sd1, before)


def test_missing_name_is_reported_and_skipped(sd1, tmp_path):
    sd = fx.write_kohya_lora(os.path.join(_lora_dir(tmp_path), "real.safetensors"), sd1, fx.SD1_KOHYA_MODULES)
    reg = _registry(tmp_path)
    reg.refresh()
    target = fx.SD1_KOHYA_MODULES[SD1_LINEAR]
    base = _weight(sd1, target)
    with apply_networks(sd1, [NetworkActivation("nope"), NetworkActivation("real")], reg) as applied:
        assert applied.missing == ["nope"]
        assert [i.name for i, _ in applied.applied] == ["real"]
        _close(_weight(sd1, target), base + _lora_delta(sd, SD1_LINEAR))
    assert torch.equal(_weight(sd1, target), base)


def test_corrupt_file_in_request_is_an_error_not_a_crash(sd1, tmp_path):
    fx.write_corrupt_network(os.path.join(_lora_dir(tmp_path), "broken.safetensors"))
    reg = _registry(tmp_path)
    assert [i.name for i in reg.refresh()] == ["broken"]  # listed (A1111 lists it, metadata unreadable)
    before = _snapshot(sd1)
    with apply_networks(sd1, [NetworkActivation("broken")], reg) as applied:
        assert applied.applied == [] and applied.missing == []
        assert len(applied.errors) == 1 and "broken.safetensors" in applied.errors[0]
    _assert_identical(sd1, before)


def test_sd1_lora_on_sdxl_counts_errors_and_restores(sdxl, tmp_path, sd1):
    fx.write_kohya_lora(os.path.join(_lora_dir(tmp_path), "sd1only.safetensors"), sd1, fx.SD1_KOHYA_MODULES)
    reg = _registry(tmp_path)
    before = _snapshot(sdxl)
    with apply_networks(sdxl, [NetworkActivation("sd1only")], reg) as applied:
        # resnet conv1 of level 0 fits (32 channels in both); mid-block attn2.to_k does not (context 32 vs 64)
        assert applied.errors == ["Networks with errors: sd1only (1)"]
        assert not torch.equal(_weight(sdxl, ("unet", "down_blocks.0.resnets.0.conv1")),
                               before["unet.down_blocks.0.resnets.0.conv1.weight"])
    _assert_identical(sdxl, before)


def test_text_encoder_output_changes_while_applied(sd1, tmp_path):
    fx.write_kohya_lora(os.path.join(_lora_dir(tmp_path), "te.safetensors"), sd1, fx.SD1_KOHYA_MODULES, alpha=4.0)
    reg = _registry(tmp_path)
    ids = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 3])

    def encode():
        with torch.no_grad():
            return sd1.text_encoder(ids)[0]

    base = encode()
    with apply_networks(sd1, [NetworkActivation("te")], reg):
        patched = encode()
    assert (patched - base).abs().max() > 1e-4
    assert torch.equal(encode(), base)


def test_dyn_dim_uses_the_first_ranks(sd1, tmp_path):
    sd = fx.write_kohya_lora(os.path.join(_lora_dir(tmp_path), "dyn.safetensors"), sd1,
                             {SD1_LINEAR: fx.SD1_KOHYA_MODULES[SD1_LINEAR]}, rank=4, alpha=2.0)
    reg = _registry(tmp_path)
    target = fx.SD1_KOHYA_MODULES[SD1_LINEAR]
    base = _weight(sd1, target)
    with apply_networks(sd1, [NetworkActivation("dyn", dyn_dim=2)], reg):
        up, down = sd[f"{SD1_LINEAR}.lora_up.weight"], sd[f"{SD1_LINEAR}.lora_down.weight"]
        _close(_weight(sd1, target), base + (up[:, :2] @ down[:2]) * (2.0 / 4))  # scale keeps the full rank


def test_applies_inside_inference_mode(sd1, tmp_path):
    fx.write_kohya_lora(os.path.join(_lora_dir(tmp_path), "im.safetensors"), sd1, fx.SD1_KOHYA_MODULES)
    reg = _registry(tmp_path)
    before = _snapshot(sd1)
    base = _weight(sd1, fx.SD1_KOHYA_MODULES[SD1_TE])
    with torch.inference_mode():
        with apply_networks(sd1, [NetworkActivation("im")], reg):
            assert not torch.equal(_weight(sd1, fx.SD1_KOHYA_MODULES[SD1_TE]), base)
    _assert_identical(sd1, before)


# -- LyCORIS and diffusers/PEFT files ----------------------------------------------------------------------------


def _apply_one(comp, tmp_path, name):
    reg = _registry(tmp_path)
    return apply_networks(comp, [NetworkActivation(name, te_multiplier=0.8, unet_multiplier=0.8)], reg)


def test_loha_linear_conv_and_cp(sd1, tmp_path):
    mods = {SD1_LINEAR: fx.SD1_KOHYA_MODULES[SD1_LINEAR], SD1_CONV3: fx.SD1_KOHYA_MODULES[SD1_CONV3]}
    sd = fx.write_loha(os.path.join(_lora_dir(tmp_path), "loha.safetensors"), sd1, mods, rank=2, alpha=1.0)
    cp_key = "lora_unet_up_blocks_0_resnets_0_conv2"
    cp = fx.write_loha(os.path.join(_lora_dir(tmp_path), "lohacp.safetensors"), sd1,
                       {cp_key: ("unet", "up_blocks.0.resnets.0.conv2")}, rank=2, alpha=1.0, cp=True)
    before = _snapshot(sd1)
    lin, conv = (_weight(sd1, t) for t in mods.values())
    conv_cp = _weight(sd1, ("unet", "up_blocks.0.resnets.0.conv2"))
    with _apply_one(sd1, tmp_path, "loha") as applied:
        assert applied.networks[0].modules and {m.kind for m in applied.networks[0].modules.values()} == {"loha"}
        k = SD1_LINEAR
        d = (sd[f"{k}.hada_w1_a"] @ sd[f"{k}.hada_w1_b"]) * (sd[f"{k}.hada_w2_a"] @ sd[f"{k}.hada_w2_b"])
        _close(_weight(sd1, mods[k]), lin + d * (1.0 / 2) * 0.8)
        k = SD1_CONV3
        d = ((sd[f"{k}.hada_w1_a"] @ sd[f"{k}.hada_w1_b"]) * (sd[f"{k}.hada_w2_a"] @ sd[f"{k}.hada_w2_b"]))
        _close(_weight(sd1, mods[k]), conv + d.reshape(conv.shape) * 0.5 * 0.8)
    with _apply_one(sd1, tmp_path, "lohacp"):
        k = cp_key
        d1 = torch.einsum("pqkl,po,qi->oikl", cp[f"{k}.hada_t1"], cp[f"{k}.hada_w1_a"], cp[f"{k}.hada_w1_b"])
        d2 = torch.einsum("pqkl,po,qi->oikl", cp[f"{k}.hada_t2"], cp[f"{k}.hada_w2_a"], cp[f"{k}.hada_w2_b"])
        _close(_weight(sd1, ("unet", "up_blocks.0.resnets.0.conv2")), conv_cp + d1 * d2 * 0.5 * 0.8)
    _assert_identical(sd1, before)


def test_lokr_linear_and_conv(sd1, tmp_path):
    mods = {SD1_LINEAR: fx.SD1_KOHYA_MODULES[SD1_LINEAR], SD1_CONV3: fx.SD1_KOHYA_MODULES[SD1_CONV3]}
    sd = fx.write_lokr(os.path.join(_lora_dir(tmp_path), "lokr.safetensors"), sd1, mods, factor=2, rank=2, alpha=1.0)
    before = _snapshot(sd1)
    lin, conv = (_weight(sd1, t) for t in mods.values())
    with _apply_one(sd1, tmp_path, "lokr"):
        k = SD1_LINEAR
        d = torch.kron(sd[f"{k}.lokr_w1"], sd[f"{k}.lokr_w2_a"] @ sd[f"{k}.lokr_w2_b"])
        _close(_weight(sd1, mods[k]), lin + d * (1.0 / 2) * 0.8)  # alpha / rank of the low-rank w2
        k = SD1_CONV3
        d = torch.kron(sd[f"{k}.lokr_w1"][:, :, None, None], sd[f"{k}.lokr_w2"])
        _close(_weight(sd1, mods[k]), conv + d * 0.8)  # both factors full: no rank, alpha unused (A1111)
    _assert_identical(sd1, before)


def test_ia3_full_and_norm(sd1, tmp_path):
    d = _lora_dir(tmp_path)
    lin_t = fx.SD1_KOHYA_MODULES[SD1_LINEAR]  # attn to_q: a Linear without bias
    norm_key, norm_t = "lora_unet_down_blocks_0_resnets_0_norm1", ("unet", "down_blocks.0.resnets.0.norm1")
    ia3 = fx.write_ia3(os.path.join(d, "ia3.safetensors"), sd1, {SD1_LINEAR: lin_t})
    full = fx.write_full(os.path.join(d, "full.safetensors"), sd1, {SD1_LINEAR: lin_t})
    norm = fx.write_norm(os.path.join(d, "norm.safetensors"), sd1, {norm_key: norm_t})
    before = _snapshot(sd1)
    w = _weight(sd1, lin_t)
    assert fx.module_of(sd1, lin_t).bias is None
    with _apply_one(sd1, tmp_path, "ia3"):
        _close(_weight(sd1, lin_t), w + w * ia3[f"{SD1_LINEAR}.weight"][:, None] * 0.8)
    with _apply_one(sd1, tmp_path, "full"):
        _close(_weight(sd1, lin_t), w + full[f"{SD1_LINEAR}.diff"] * 0.8)
        _close(fx.module_of(sd1, lin_t).bias.detach(), full[f"{SD1_LINEAR}.diff_b"] * 0.8)  # bias created
    assert fx.module_of(sd1, lin_t).bias is None  # and removed again
    gn = fx.module_of(sd1, norm_t)
    gw, gb = gn.weight.detach().clone(), gn.bias.detach().clone()
    with _apply_one(sd1, tmp_path, "norm"):
        _close(gn.weight.detach(), gw + norm[f"{norm_key}.w_norm"] * 0.8)
        _close(gn.bias.detach(), gb + norm[f"{norm_key}.b_norm"] * 0.8)
    _assert_identical(sd1, before)


@pytest.mark.parametrize("style", ["peft", "lora_layer", "attn_procs"])
def test_diffusers_files(sd1, tmp_path, style):
    mods = dict(fx.SD1_PEFT_MODULES)
    if style == "attn_procs":  # that format only ever held UNet attention processors
        mods = {k: v for k, v in mods.items() if k.startswith("unet.")}
    sd = fx.write_peft_lora(os.path.join(_lora_dir(tmp_path), "dif.safetensors"), sd1, mods, rank=4, style=style)
    net = load_network(LoraInfo("dif", "dif", os.path.join(_lora_dir(tmp_path), "dif.safetensors"), {}), sd1)
    assert len(net.modules) == len(mods) and net.unmatched_keys == ()
    key, target = next(iter(mods.items()))
    base = _weight(sd1, target)
    with _apply_one(sd1, tmp_path, "dif"):
        if style == "peft":
            up, down = sd[f"{key}.lora_B.weight"], sd[f"{key}.lora_A.weight"]
        elif style == "lora_layer":
            up, down = sd[f"{key}.lora.up.weight"], sd[f"{key}.lora.down.weight"]
        else:
            attn, _, proj = key.removeprefix("unet.").rpartition(".")
            up, down = sd[f"{attn}.processor.{proj}_lora.up.weight"], sd[f"{attn}.processor.{proj}_lora.down.weight"]
        _close(_weight(sd1, target), base + (up @ down) * 0.8)  # no alpha saved: scale 1 (PEFT alpha = r)


def test_peft_metadata_alpha_scales(sd1, tmp_path):
    path = os.path.join(_lora_dir(tmp_path), "alpha.safetensors")
    sd = fx.write_peft_lora(path, sd1, fx.SD1_PEFT_MODULES, rank=4, lora_alpha=8)
    reg = _registry(tmp_path)
    key, target = next(iter(fx.SD1_PEFT_MODULES.items()))
    base = _weight(sd1, target)
    with apply_networks(sd1, [NetworkActivation("alpha")], reg):
        _close(_weight(sd1, target), base + (sd[f"{key}.lora_B.weight"] @ sd[f"{key}.lora_A.weight"]) * 2.0)


# -- cache -------------------------------------------------------------------------------------------------------


def test_cache_reuses_and_reloads_on_change(sd1, tmp_path):
    path = os.path.join(_lora_dir(tmp_path), "c.safetensors")
    fx.write_kohya_lora(path, sd1, fx.SD1_KOHYA_MODULES, seed=1)
    reg = LoraRegistry([_lora_dir(tmp_path)], in_memory_limit=1)
    info = reg.refresh()[0]
    first = reg.load(info, sd1)
    assert reg.load(info, sd1) is first
    sd = fx.write_kohya_lora(path, sd1, fx.SD1_KOHYA_MODULES, seed=2)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = reg.load(info, sd1)
    assert second is not first
    up = next(m for m in second.modules.values() if m.network_key.startswith(SD1_LINEAR + ".")).w["lora_up.weight"]
    assert torch.equal(up, sd[f"{SD1_LINEAR}.lora_up.weight"])
    assert len(reg.cache) == 1  # the stale version was replaced


def test_cache_keeps_last_request_plus_limit(sd1, tmp_path):
    d = _lora_dir(tmp_path)
    for n in ("x", "y", "z"):
        fx.write_kohya_lora(os.path.join(d, f"{n}.safetensors"), sd1, {SD1_LINEAR: fx.SD1_KOHYA_MODULES[SD1_LINEAR]})
    reg = LoraRegistry([d])  # lora_in_memory_limit 0 (A1111's default)
    with apply_networks(sd1, [NetworkActivation("x"), NetworkActivation("y")], reg) as applied:
        kept = list(applied.networks)
    assert len(reg.cache) == 2
    with apply_networks(sd1, [NetworkActivation("x")], reg) as applied:
        assert applied.networks[0] is kept[0]  # reused, not re-read
    assert len(reg.cache) == 1
    with apply_networks(sd1, [], reg):
        pass
    assert len(reg.cache) == 0


# -- registry ----------------------------------------------------------------------------------------------------


def _tiny_file(path, metadata=None, payload=b"\x00" * 8):
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({"lora_unet_x.alpha": torch.frombuffer(bytearray(payload), dtype=torch.uint8).float()}, path,
              metadata=metadata)
    return path


def test_registry_lists_in_a1111_order_with_aliases(tmp_path):
    lora, lyco = tmp_path / "models" / "Lora", tmp_path / "models" / "LyCORIS"
    _tiny_file(str(lora / "b10.safetensors"))
    _tiny_file(str(lora / "b2.safetensors"), {"ss_output_name": "Bee Two"})
    _tiny_file(str(lora / "A" / "a.safetensors"))
    torch.save({"lora_unet_x.alpha": torch.tensor(1.0)}, str(lora / "c.pt"))
    (lora / "notes.txt").write_text("not a network")
    _tiny_file(str(lyco / "loha.safetensors"), {"ss_output_name": "Bee Two", "ss_sd_model_name": "x", "other": "y",
                                                "ss_tag_frequency": '{"img": {"cat": 3}}'})
    reg = _registry(tmp_path)
    assert reg.list() == [] and reg.resolve("b2") is None  # nothing is scanned before refresh()
    listed = reg.refresh()
    # folders in natural order (root first), files naturally sorted; models/Lora before models/LyCORIS
    assert [i.name for i in listed] == ["b2", "b10", "c", "a", "loha"]
    assert all(os.path.isabs(i.path) for i in listed)
    b2 = reg.resolve("b2")
    assert b2.alias == "Bee Two" and b2.metadata == {"ss_output_name": "Bee Two"}
    assert reg.resolve("c").metadata == {} and reg.resolve("c").alias == "c"
    # "Bee Two" was claimed twice: the alias becomes forbidden and resolves by file name only (A1111)
    assert reg.resolve("Bee Two") is None
    assert reg.prompt_name(b2) == "b2"
    # metadata in A1111's metadata_tags_order: ss_sd_model_name first (the rest keep the header's order)
    meta = reg.resolve("loha").metadata
    assert list(meta)[0] == "ss_sd_model_name" and list(meta)[1] == "ss_tag_frequency"
    # JSON-object strings are parsed, as A1111's read_metadata_from_safetensors does
    assert meta == {"ss_sd_model_name": "x", "ss_output_name": "Bee Two", "other": "y",
                    "ss_tag_frequency": {"img": {"cat": 3}}}


def test_registry_alias_lookup_and_duplicate_names(tmp_path):
    lora, lyco = tmp_path / "models" / "Lora", tmp_path / "models" / "LyCORIS"
    _tiny_file(str(lora / "style.safetensors"), {"ss_output_name": "MyStyle"})
    _tiny_file(str(lora / "dup.safetensors"))
    _tiny_file(str(lyco / "dup.safetensors"))
    _tiny_file(str(lora / "none.safetensors"))
    reg = _registry(tmp_path)
    reg.refresh()
    assert reg.resolve("MyStyle").name == "style" and reg.resolve("style").name == "style"
    assert reg.prompt_name(reg.resolve("style")) == "MyStyle"
    assert reg.prompt_name(reg.resolve("style"), "Filename") == "style"
    assert reg.resolve("mystyle") is None  # case-sensitive, as A1111's dict
    # the later file of a duplicated name wins, at the first one's place in the list
    assert reg.resolve("dup").path == str(lyco / "dup.safetensors")
    assert [i.name for i in reg.list()] == ["dup", "none", "style"]
    assert reg.resolve("none").name == "none"  # "none" is forbidden as alias but found as a file name


def test_shorthash_is_addnet_hash_cut_to_12_and_cached(tmp_path):
    path = _tiny_file(str(tmp_path / "models" / "Lora" / "h.safetensors"), {"ss_output_name": "x"}, b"\x01" * 16)
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    expected = hashlib.sha256(raw[8 + n:]).hexdigest()
    cache_file = tmp_path / "cache.json"
    reg = LoraRegistry([str(tmp_path / "models" / "Lora")], HashCache(str(cache_file)))
    info = reg.refresh()[0]
    assert reg.shorthash(info, compute=False) == ""
    assert reg.shorthash(info) == expected[:12]
    saved = json.loads(cache_file.read_text())
    assert saved["hashes-addnet"]["lora/h"] == {"mtime": os.path.getmtime(path), "sha256": expected}
    # a new registry on the same cache file reads it without hashing
    again = LoraRegistry([str(tmp_path / "models" / "Lora")], HashCache(str(cache_file)), no_hashing=True)
    assert again.shorthash(again.refresh()[0]) == expected[:12]


def test_shorthash_prefers_sshs_model_hash_and_pt_uses_full_sha256(tmp_path):
    d = tmp_path / "models" / "Lora"
    _tiny_file(str(d / "k.safetensors"), {"sshs_model_hash": "ABCDEF0123456789" * 4})
    torch.save({"lora_unet_x.alpha": torch.tensor(1.0)}, str(d / "p.pt"))
    reg = LoraRegistry([str(d)])
    reg.refresh()
    assert reg.shorthash(reg.resolve("k")) == "ABCDEF012345"
    full = hashlib.sha256((d / "p.pt").read_bytes()).hexdigest()
    assert reg.shorthash(reg.resolve("p")) == full[:12]


def test_hashes_infotext(sd1, tmp_path):
    d = _lora_dir(tmp_path)
    fx.write_kohya_lora(os.path.join(d, "one.safetensors"), sd1, {SD1_LINEAR: fx.SD1_KOHYA_MODULES[SD1_LINEAR]},
                        metadata={"ss_output_name": "One:Style, v2"})
    fx.write_kohya_lora(os.path.join(d, "two.safetensors"), sd1, {SD1_LINEAR: fx.SD1_KOHYA_MODULES[SD1_LINEAR]},
                        seed=5)
    reg = _registry(tmp_path)
    reg.refresh()
    h1, h2 = (reg.shorthash(reg.resolve(n)) for n in ("one", "two"))
    assert len(h1) == 12 and h1 != h2
    acts = [NetworkActivation("One:Style, v2"), NetworkActivation("two"), NetworkActivation("gone")]
    with apply_networks(sd1, acts, reg) as applied:
        # the name as written in the prompt (A1111 mentioned_name), ":" and "," removed
        assert applied.hashes_infotext() == f"OneStyle v2: {h1}, two: {h2}"
        assert applied.missing == ["gone"]
    assert AppliedNetworks().hashes_infotext() is None


# -- prompt params -----------------------------------------------------------------------------------------------


def test_activations_from_params_a1111_rules():
    _, extra = parse_extra_networks(
        "a <lora:a> <lora:b:0.5> <lora:c:0.5:0.25> <lora:d:1:1:8> <lora:e:0.3:unet=0.9:te=0.1> <lora:f:dyn=4:2>")
    acts = activations_from_params(extra["lora"])
    assert acts == [
        NetworkActivation("a", 1.0, 1.0, None),
        NetworkActivation("b", 0.5, 0.5, None),  # unet defaults to te
        NetworkActivation("c", 0.5, 0.25, None),
        NetworkActivation("d", 1.0, 1.0, 8),
        NetworkActivation("e", 0.1, 0.9, None),  # named override positional
        NetworkActivation("f", 2.0, 2.0, 4),
    ]
    duck = SimpleNamespace(positional=("g", "0.7"), named={})
    assert activations_from_params([duck]) == [NetworkActivation("g", 0.7, 0.7)]
    with pytest.raises(ValueError):
        activations_from_params([ExtraNetworkParams.from_items(["x", "strong"])])
    with pytest.raises(ValueError):
        activations_from_params([ExtraNetworkParams.from_items(["te=1"])])


def test_lyco_tags_join_lora_tags_in_dict_order():
    _, extra = parse_extra_networks("<lyco:l1:0.5> x <lora:a> <lyco:l2> <hypernet:h>")
    assert [a.name for a in activations_from_extra_networks(extra)] == ["l1", "l2", "a"]
