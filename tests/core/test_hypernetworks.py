"""A1111 hypernetworks: the .pt format, HypernetworkModule's stack, the registry, and the scoped UNet patch.

Expected values are computed by hand from the file's raw tensors (torch.nn.functional), as A1111's
``attention_CrossAttention_forward`` would: ``to_k(context + hn_k(context) * m)``,
``to_v(context + hn_v(context) * m)``.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F

from tests.fixtures.hypernetworks import write_tiny_hypernetwork
from webui.core.devices import plan_devices
from webui.core.networks.hypernetworks import (
    HypernetworkAttnProcessor,
    HypernetworkCache,
    HypernetworkInfo,
    HypernetworkLoadError,
    HypernetworkModule,
    HypernetworkRegistry,
    activation_class,
    activations_from_params,
    apply_hypernetworks,
    load_hypernetwork,
    parse_dropout_structure,
    prompt_tag_for_setting,
)
from webui.core.models.loader import load_components
from webui.core.types import CheckpointInfo


@dataclass
class Params:  # the prompt parser's extra-network params: positional args and key=value args
    positional: tuple[str, ...]
    named: dict = field(default_factory=dict)


# --- HypernetworkModule and the file format ---------------------------------------------------------------------


def _types(module: HypernetworkModule) -> list[str]:
    return [type(m).__name__ for m in module.linear]


def test_layer_stack_is_a1111s():
    # [1, 2, 1], relu, layer norm, dropout after the hidden layer (A1111: Linear, act, LayerNorm, Dropout per step;
    # no activation after the last Linear unless activate_output)
    m = HypernetworkModule(4, [1, 2, 1], "relu", add_layer_norm=True, dropout_structure=[0, 0.3, 0])
    assert _types(m) == ["Linear", "ReLU", "LayerNorm", "Dropout", "Linear", "LayerNorm"]
    assert (m.linear[0].in_features, m.linear[0].out_features, m.linear[4].out_features) == (4, 8, 4)
    m = HypernetworkModule(4, [1, 2, 1], "relu", add_layer_norm=False, activate_output=True)
    assert _types(m) == ["Linear", "ReLU", "Linear", "ReLU"]
    m = HypernetworkModule(4, [1, 1.5, 2, 1], "linear")
    assert _types(m) == ["Linear", "Linear", "Linear"]
    assert [(layer.in_features, layer.out_features) for layer in m.linear] == [(4, 6), (6, 8), (8, 4)]
    with pytest.raises(ValueError, match="start and end with 1"):
        HypernetworkModule(4, [2, 1])


def test_activation_names_and_dropout_structure_as_a1111():
    assert activation_class("swish") is torch.nn.Hardswish  # A1111's table maps "swish" to Hardswish
    assert activation_class("linear") is torch.nn.Identity
    assert activation_class("gelu") is torch.nn.GELU  # any torch.nn activation by lower-cased class name
    assert activation_class("mish") is torch.nn.Mish
    with pytest.raises(ValueError, match="unsupported activation function: nope"):
        activation_class("nope")
    assert parse_dropout_structure([1, 2, 1], False, True) == [0, 0, 0]
    assert parse_dropout_structure([1, 2, 1], True, False) == [0, 0, 0]
    assert parse_dropout_structure([1, 2, 2, 1], True, False) == [0, 0.3, 0, 0]
    assert parse_dropout_structure([1, 2, 2, 1], True, True) == [0, 0.3, 0.3, 0]
    assert parse_dropout_structure(None, True, True) == [0, 0.3, 0]


def test_file_round_trip_and_forward_by_hand(tmp_path):
    path = write_tiny_hypernetwork(
        str(tmp_path / "anime.pt"), sizes=(8, 16), seed=3, add_layer_norm=True, use_dropout=True,
        layer_structure=(1, 2, 2, 1), name="anime-v2",
    )
    raw = torch.load(path, weights_only=True)
    assert sorted(k for k in raw if isinstance(k, int)) == [8, 16]
    assert isinstance(raw[8], tuple) and len(raw[8]) == 2

    hn = load_hypernetwork(path)
    assert hn.name == "anime-v2" and hn.filename == os.path.abspath(path) and hn.step == 100
    assert hn.sizes == [8, 16]
    assert hn.layer_structure == [1, 2, 2, 1] and hn.activation_func == "relu" and hn.add_layer_norm
    assert hn.dropout_structure == [0, 0.3, 0, 0] and hn.use_dropout and not hn.last_layer_dropout
    assert hn.sd_checkpoint == "0123456789" and hn.sd_checkpoint_name == "tiny-sd15"

    # The value module of width 8: Linear, ReLU, LN, Dropout(eval: identity), Linear, ReLU, LN, Linear, LN.
    sd = raw[8][1]
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    h = F.layer_norm(F.relu(F.linear(x, sd["linear.0.weight"], sd["linear.0.bias"])), (16,),
                     sd["linear.2.weight"], sd["linear.2.bias"])
    h = F.layer_norm(F.relu(F.linear(h, sd["linear.4.weight"], sd["linear.4.bias"])), (16,),
                     sd["linear.6.weight"], sd["linear.6.bias"])
    h = F.layer_norm(F.linear(h, sd["linear.7.weight"], sd["linear.7.bias"]), (8,),
                     sd["linear.8.weight"], sd["linear.8.bias"])
    module_v = hn.layers[8][1]
    assert not module_v.training
    assert torch.allclose(module_v(x, 0.7), x + h * 0.7, atol=1e-6)
    assert torch.equal(module_v(x, 0.0), x)


def test_old_linear1_linear2_file_gets_a1111_defaults(tmp_path):
    """The first hypernetworks (before options were saved): only {width: (sd_k, sd_v)} with linear1/linear2 keys;
    A1111 assumes layer structure [1, 2, 1], no activation, no layer norm."""
    g = torch.Generator().manual_seed(1)

    def sd():
        return {"linear1.weight": torch.randn(12, 6, generator=g), "linear1.bias": torch.randn(12, generator=g),
                "linear2.weight": torch.randn(6, 12, generator=g), "linear2.bias": torch.randn(6, generator=g)}

    data = {6: [sd(), sd()]}
    torch.save(data, tmp_path / "old.pt")
    hn = load_hypernetwork(tmp_path / "old.pt")
    assert hn.name == "old" and hn.layer_structure == [1, 2, 1] and hn.activation_func is None and hn.step == 0
    k = data[6][0]
    x = torch.randn(1, 3, 6, generator=g)
    expected = x + F.linear(F.linear(x, k["linear1.weight"], k["linear1.bias"]), k["linear2.weight"], k["linear2.bias"])
    assert torch.allclose(hn.layers[6][0](x), expected, atol=1e-5)


def test_unreadable_files_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(HypernetworkLoadError, match="garbage.pt"):
        load_hypernetwork(garbage)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > /tmp/webui-hn-pwned",))

    torch.save({8: Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(HypernetworkLoadError, match="evil.pt"):
        load_hypernetwork(tmp_path / "evil.pt")
    assert not os.path.exists("/tmp/webui-hn-pwned")

    path = write_tiny_hypernetwork(str(tmp_path / "wrong.pt"), sizes=(8,))
    data = torch.load(path, weights_only=True)
    data["layer_structure"] = [1, 3, 1]  # the stored weights are for [1, 2, 1]
    torch.save(data, path)
    with pytest.raises(HypernetworkLoadError, match=r"wrong.pt: layers for size 8") as e:
        load_hypernetwork(path)
    assert isinstance(e.value, ValueError)
    with pytest.raises(HypernetworkLoadError, match="missing.pt"):
        HypernetworkCache().load(tmp_path / "missing.pt")


def test_cache_reuses_until_the_file_changes(tmp_path):
    cache = HypernetworkCache(max_entries=2)
    a = write_tiny_hypernetwork(str(tmp_path / "a.pt"), sizes=(8,), seed=1)
    first = cache.load(a)
    assert cache.load(a) is first
    write_tiny_hypernetwork(str(tmp_path / "a.pt"), sizes=(8, 16), seed=2)  # retrained: new size, new mtime
    os.utime(a, ns=(os.stat(a).st_atime_ns, os.stat(a).st_mtime_ns + 10**9))
    second = cache.load(a)
    assert second is not first and second.sizes == [8, 16]
    b = write_tiny_hypernetwork(str(tmp_path / "b.pt"), sizes=(8,))
    c = write_tiny_hypernetwork(str(tmp_path / "c.pt"), sizes=(8,))
    cache.load(b)
    cache.load(c)  # evicts a, the least recently used
    assert cache.load(a) is not second


# --- registry and prompt tags -----------------------------------------------------------------------------------


def test_registry_lists_like_a1111(tmp_path):
    root = tmp_path / "hypernetworks"
    for rel in ["Zeta.pt", "alpha.pt", "sub/Beta.pt", "sub/deeper/gamma.pt", "None.pt", "notes.txt",
                "model.safetensors", "other/alpha.pt"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    reg = HypernetworkRegistry([str(root)])
    assert reg.list() == []  # nothing is scanned before refresh()
    reg.refresh()
    # sorted by lower-cased path: alpha.pt, other/alpha.pt, sub/Beta.pt, sub/deeper/gamma.pt, Zeta.pt; "None" left
    # out; the second alpha (other/alpha.pt) replaces the first one's path and keeps its place
    assert reg.api_listing() == [
        {"name": "alpha", "path": str(root / "other" / "alpha.pt")},
        {"name": "Beta", "path": str(root / "sub" / "Beta.pt")},
        {"name": "gamma", "path": str(root / "sub" / "deeper" / "gamma.pt")},
        {"name": "Zeta", "path": str(root / "Zeta.pt")},
    ]
    assert reg.resolve("Beta") == HypernetworkInfo("Beta", str(root / "sub" / "Beta.pt"))
    assert reg.resolve("beta") is None and reg.resolve("None") is None
    assert all(os.path.isabs(i.path) for i in reg.list())
    assert HypernetworkRegistry([str(tmp_path / "nowhere")]).refresh() == []


def test_activations_from_prompt_params(tmp_path):
    root = tmp_path / "hn"
    write_tiny_hypernetwork(str(root / "anime.pt"), sizes=(8,))
    write_tiny_hypernetwork(str(root / "sub" / "furry.pt"), sizes=(8,))
    reg = HypernetworkRegistry([str(root)])
    reg.refresh()
    found, missing = activations_from_params(
        [Params(("anime",)), Params(("ghost", "0.5")), Params(("furry", "0.25"), {"te": "1"}), Params(("anime", "-1"))],
        reg,
    )
    assert [(i.name, m) for i, m in found] == [("anime", 1.0), ("furry", 0.25), ("anime", -1.0)]
    assert missing == ["ghost"]
    with pytest.raises(ValueError, match="multiplier"):
        activations_from_params([Params(("anime", "lots"))], reg)
    assert reg.load(found[0][0]) is reg.load(found[2][0])  # one cached load

    # "Add hypernetwork to prompt" (sd_hypernetwork), with extra_networks_default_multiplier
    assert prompt_tag_for_setting("furry", [Params(("anime",))], reg, 1.0) == "<hypernet:furry:1.0>"
    assert prompt_tag_for_setting("furry", [Params(("furry", "0.3"))], reg, 1.0) is None
    assert prompt_tag_for_setting("None", [], reg, 1.0) is None
    assert prompt_tag_for_setting("ghost", [], reg, 1.0) is None


# --- inside the UNet --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd1(models_root, tokenizer_dir):
    _, paths = models_root
    info = CheckpointInfo(filename=paths["SD1"], name="tiny-sd15.safetensors", model_name="tiny-sd15")
    return load_components(info, plan_devices(use_cpu=["all"]), tokenizer_dir)


def _inputs(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    width = unet.config.cross_attention_dim
    return (torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500]), torch.randn(1, 77, width, generator=g))


@torch.no_grad()
def _run(unet, seed=0):
    sample, t, context = _inputs(unet, seed)
    return unet(sample, t, encoder_hidden_states=context).sample


def _hand_transform(raw_sd, x, multiplier):
    """Default fixture stack ([1, 2, 1], relu, no layer norm): x + (W1 relu(W0 x + b0) + b1) * m."""
    h = F.relu(F.linear(x, raw_sd["linear.0.weight"], raw_sd["linear.0.bias"]))
    return x + F.linear(h, raw_sd["linear.2.weight"], raw_sd["linear.2.bias"]) * multiplier


def _hand_attention(attn, hidden_states, context_k, context_v):
    b, n, _ = hidden_states.shape
    q, k, v = attn.to_q(hidden_states), attn.to_k(context_k), attn.to_v(context_v)
    d = q.shape[-1] // attn.heads
    q, k, v = (t.view(b, -1, attn.heads, d).transpose(1, 2) for t in (q, k, v))
    w = (q @ k.transpose(-1, -2) * d**-0.5).softmax(-1)
    out = (w @ v).transpose(1, 2).reshape(b, n, attn.heads * d)
    return attn.to_out[0](out)


def _processors(unet):
    return {name: proc for name, proc in unet.attn_processors.items()}


@torch.no_grad()
def test_cross_and_self_attention_equal_the_hand_computation(sd1, tmp_path):
    unet = sd1.unet
    width = unet.config.cross_attention_dim
    path = write_tiny_hypernetwork(str(tmp_path / "hn.pt"), sizes=(width,), seed=5)
    raw = torch.load(path, weights_only=True)
    hn = load_hypernetwork(path)
    block = unet.down_blocks[0].attentions[0].transformer_blocks[0]
    assert block.attn1.to_k.in_features == width  # the tiny model's first level has as many channels as the text
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 64, block.attn1.to_q.in_features, generator=g)
    context = torch.randn(2, 77, width, generator=g)
    m = 0.6
    plain_cross = block.attn2(x, encoder_hidden_states=context)

    with apply_hypernetworks(unet, [(hn, m)]):
        assert isinstance(block.attn2.processor, HypernetworkAttnProcessor)
        cross = block.attn2(x, encoder_hidden_states=context)
        self_ = block.attn1(x)

    ck, cv = _hand_transform(raw[width][0], context, m), _hand_transform(raw[width][1], context, m)
    assert not torch.allclose(ck, cv)  # key and value get different transforms
    assert torch.allclose(cross, _hand_attention(block.attn2, x, ck, cv), atol=1e-5)
    assert not torch.allclose(cross, plain_cross, atol=1e-3)
    # self-attention: A1111's `context = default(context, x)`, so the image tokens themselves are transformed
    sk, sv = _hand_transform(raw[width][0], x, m), _hand_transform(raw[width][1], x, m)
    assert torch.allclose(self_, _hand_attention(block.attn1, x, sk, sv), atol=1e-5)


@torch.no_grad()
def test_two_hypernetworks_chain_in_order(sd1, tmp_path):
    unet = sd1.unet
    width = unet.config.cross_attention_dim
    p1 = write_tiny_hypernetwork(str(tmp_path / "one.pt"), sizes=(width,), seed=1)
    p2 = write_tiny_hypernetwork(str(tmp_path / "two.pt"), sizes=(width,), seed=2, std=0.2)
    r1, r2 = torch.load(p1, weights_only=True)[width], torch.load(p2, weights_only=True)[width]
    attn = unet.up_blocks[1].attentions[0].transformer_blocks[0].attn2
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 16, attn.to_q.in_features, generator=g)
    context = torch.randn(1, 77, width, generator=g)
    with apply_hypernetworks(unet, [(load_hypernetwork(p1), 0.5), (load_hypernetwork(p2), 1.5)]):
        out = attn(x, encoder_hidden_states=context)
    # A1111 apply_hypernetworks: each one transforms the previous one's result, separately for k and v
    ck = _hand_transform(r2[0], _hand_transform(r1[0], context, 0.5), 1.5)
    cv = _hand_transform(r2[1], _hand_transform(r1[1], context, 0.5), 1.5)
    assert torch.allclose(out, _hand_attention(attn, x, ck, cv), atol=1e-5)


def test_unet_changes_inside_and_is_bit_identical_after(sd1, tmp_path):
    unet = sd1.unet
    width = unet.config.cross_attention_dim
    hn = load_hypernetwork(write_tiny_hypernetwork(str(tmp_path / "hn.pt"), sizes=(width,), seed=5))
    before_procs = _processors(unet)
    plain = _run(unet)
    with apply_hypernetworks(unet, [(hn, 1.0)]):
        patched = _run(unet)
    assert not torch.allclose(patched, plain, atol=1e-4)
    assert torch.equal(_run(unet), plain)
    assert all(proc is before_procs[name] for name, proc in _processors(unet).items())

    with pytest.raises(RuntimeError, match="boom"):
        with apply_hypernetworks(unet, [(hn, 1.0)]):
            assert torch.equal(_run(unet), patched)
            raise RuntimeError("boom")
    assert all(proc is before_procs[name] for name, proc in _processors(unet).items())
    assert torch.equal(_run(unet), plain)


def test_multiplier_zero_and_foreign_widths_change_nothing(sd1, tmp_path):
    unet = sd1.unet
    width = unet.config.cross_attention_dim
    hn = load_hypernetwork(write_tiny_hypernetwork(str(tmp_path / "hn.pt"), sizes=(width,), seed=5))
    plain = _run(unet)
    with apply_hypernetworks(unet, [(hn, 0.0)]):
        assert torch.equal(_run(unet), plain)  # x + stack(x) * 0 == x, through the original processor's maths
    # a hypernetwork for another model's context width (768 here) is a no-op: no module is touched
    other = load_hypernetwork(write_tiny_hypernetwork(str(tmp_path / "sd15.pt"), sizes=(768,), std=0.01))
    before = _processors(unet)
    with apply_hypernetworks(unet, [(other, 1.0)]):
        assert all(proc is before[name] for name, proc in _processors(unet).items())
        assert torch.equal(_run(unet), plain)
    with apply_hypernetworks(unet, []):
        assert torch.equal(_run(unet), plain)


def test_block_width_layers_act_on_self_attention_only(sd1, tmp_path):
    """A width that is not the text's (A1111's 320/640/1280 modules) reaches only the self-attention of blocks with
    that many channels: here the 64-channel middle block."""
    unet = sd1.unet
    mid_channels = unet.config.block_out_channels[-1]
    assert mid_channels != unet.config.cross_attention_dim
    hn = load_hypernetwork(write_tiny_hypernetwork(str(tmp_path / "mid.pt"), sizes=(mid_channels,), seed=6))
    plain = _run(unet)
    with apply_hypernetworks(unet, [(hn, 1.0)]):
        patched = {name for name, p in _processors(unet).items() if isinstance(p, HypernetworkAttnProcessor)}
        out = _run(unet)
    assert patched and all(name.startswith("mid_block.") and ".attn1." in name for name in patched)
    assert not torch.allclose(out, plain, atol=1e-4)


def test_layers_follow_the_unet_dtype(sd1, tmp_path):
    unet = copy.deepcopy(sd1.unet).to(torch.float64)
    width = unet.config.cross_attention_dim
    hn = load_hypernetwork(write_tiny_hypernetwork(str(tmp_path / "hn.pt"), sizes=(width,), seed=5))
    sample, t, context = _inputs(unet)
    with torch.no_grad():
        plain = unet(sample.double(), t, encoder_hidden_states=context.double()).sample
        with apply_hypernetworks(unet, [(hn, 1.0)]):
            out = unet(sample.double(), t, encoder_hidden_states=context.double()).sample
        reference = _run(sd1.unet)
        with apply_hypernetworks(sd1.unet, [(hn, 1.0)]):
            reference_hn = _run(sd1.unet)
    assert out.dtype == torch.float64
    assert not torch.allclose(out, plain, atol=1e-4)
    assert torch.allclose(out.float(), reference_hn, atol=1e-4) and torch.allclose(plain.float(), reference, atol=1e-4)
    assert hn.layers_for(torch.device("cpu"), torch.float64)[width][0].linear[0].weight.dtype == torch.float64
    assert hn.layers[width][0].linear[0].weight.dtype == torch.float32  # the loaded originals stay as read


def test_layers_go_to_the_compute_device_not_where_an_offloaded_unet_rests(sd1, tmp_path, monkeypatch):
    """Under --medvram/--lowvram the UNet rests on the CPU between calls: the caller names the device the UNet
    computes on (the plan's), and the layers are made there, not on ``unet.device``."""
    unet = sd1.unet
    width = unet.config.cross_attention_dim
    hn = load_hypernetwork(write_tiny_hypernetwork(str(tmp_path / "hn.pt"), sizes=(width,), seed=5))
    asked = []
    real = type(hn).layers_for

    def spy(self, device, dtype):
        asked.append(torch.device(device))
        return real(self, torch.device("cpu"), dtype)  # this machine has only the CPU to build them on

    monkeypatch.setattr(type(hn), "layers_for", spy)
    with apply_hypernetworks(unet, [(hn, 1.0)], device=torch.device("meta")):
        pass
    with apply_hypernetworks(unet, [(hn, 1.0)]):
        pass
    assert asked == [torch.device("meta"), unet.device]
