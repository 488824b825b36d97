"""Issue 03 end to end through Engine.generate on the tiny SD1 checkpoint (real loader): LoRA, embeddings,
hypernetworks, VAE, clip skip, styles, comments and prompt editing change the image as A1111's do, and every
per-request change is undone afterwards (the next plain request gives the same bytes)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tests.fixtures.embeddings import random_vectors, tiny_vae, write_a1111_embedding, write_vae_file
from tests.fixtures.hypernetworks import write_tiny_hypernetwork
from tests.fixtures.networks import SD1_KOHYA_MODULES, write_corrupt_network, write_kohya_lora
from webui.config import parse
from webui.core.io.infotext import parse_generation_parameters
from webui.core.types import GenerationRequest
from webui.state import build_state


@pytest.fixture
def state(data_dir):
    return build_state(parse(["--nowebui", "--data-dir", str(data_dir)]), create_demo=False)


@pytest.fixture
def comp(state):
    return state.engine.load(state.registry.resolve("tiny-sd15"))


def _gen(state, **kw):
    base = dict(prompt="a cat", steps=2, width=64, height=64, seed=123, sampler_name="Euler", checkpoint="tiny-sd15")
    base.update(kw)
    return state.engine.generate(GenerationRequest(**base))


def _px(result) -> bytes:
    return np.asarray(result.images[0]).tobytes()


def _snapshot(comp) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(comp.modules()) for k, v in m.state_dict().items()}


def _same_weights(comp, snap) -> bool:
    now = _snapshot(comp)
    return now.keys() == snap.keys() and all(torch.equal(now[k], snap[k]) for k in snap)


def test_lora_changes_the_image_and_is_fully_undone(state, comp, data_dir):
    write_kohya_lora(os.path.join(state.config.lora_dir, "tiny_lora.safetensors"), comp, SD1_KOHYA_MODULES,
                     rank=4, alpha=4.0, seed=5)
    state.loras.refresh()
    snap = _snapshot(comp)
    base = _gen(state)
    with_lora = _gen(state, prompt="a cat <lora:tiny_lora:1>")
    assert _px(with_lora) != _px(base)
    assert _same_weights(comp, snap)  # base weights bit-identical after the request
    assert _px(_gen(state)) == _px(base)
    # the prompt keeps its tag in the infotext; Lora hashes as A1111 writes them
    info = state.loras.resolve("tiny_lora")
    text = with_lora.infotexts[0]
    assert text.startswith("a cat <lora:tiny_lora:1>\n")
    assert f'Lora hashes: "tiny_lora: {state.loras.shorthash(info)}"' in text
    assert parse_generation_parameters(text)["Lora hashes"] == f"tiny_lora: {state.loras.shorthash(info)}"
    # weight 0 on both parts is the base image
    assert _px(_gen(state, prompt="a cat <lora:tiny_lora:0>")) == _px(base)
    # disable_extra_networks leaves the tag as text and activates nothing
    off = _gen(state, prompt="a cat <lora:tiny_lora:1>", disable_extra_networks=True)
    assert _px(off) not in (_px(with_lora), _px(base)) and "Lora hashes" not in off.infotexts[0]


def test_missing_and_corrupt_lora_are_reported_and_generation_goes_on(state, comp):
    write_corrupt_network(os.path.join(state.config.lora_dir, "broken.safetensors"))
    state.loras.refresh()
    base = _gen(state)
    missing = _gen(state, prompt="a cat <lora:nope:1>")
    assert _px(missing) == _px(base)  # the tag is removed from the text either way, as A1111 does
    assert any("nope" in c for c in missing.info["comments"])
    broken = _gen(state, prompt="a cat <lora:broken:1>")
    assert _px(broken) == _px(base)
    assert any("broken.safetensors" in c for c in broken.info["comments"])


def test_embedding_in_prompt_changes_the_image_and_wrong_size_is_skipped(state, comp):
    width = comp.text_encoder.config.hidden_size
    emb_dir = state.config.embeddings_dir
    plain = _gen(state, prompt="a cat fluffystyle")  # before the file exists: ordinary tokens
    plain_big = _gen(state, prompt="a cat bigstyle")
    write_a1111_embedding(os.path.join(emb_dir, "fluffystyle.pt"), random_vectors(2, width, seed=3) * 5, step=10)
    write_a1111_embedding(os.path.join(emb_dir, "bigstyle.pt"), random_vectors(1, width * 2, seed=4))
    state.embeddings.load(comp, force=True)
    listing = state.embeddings.api_listing()
    assert listing["loaded"]["fluffystyle"]["vectors"] == 2 and listing["loaded"]["fluffystyle"]["shape"] == width
    assert "bigstyle" in listing["skipped"] and "bigstyle" not in listing["loaded"]
    used = _gen(state, prompt="a cat fluffystyle")
    assert _px(used) != _px(plain)
    assert "TI hashes: \"fluffystyle: " in used.infotexts[0]
    # the skipped one stays text: same image as before it existed
    big = _gen(state, prompt="a cat bigstyle")
    assert _px(big) == _px(plain_big) and "TI hashes" not in big.infotexts[0]


def test_hypernetwork_changes_the_image_and_is_undone(state, comp):
    width = comp.unet.config.cross_attention_dim
    write_tiny_hypernetwork(os.path.join(state.config.hypernetwork_dir, "tinyhn.pt"), sizes=(width,), seed=2)
    state.hypernetworks.refresh()
    base = _gen(state)
    hn = _gen(state, prompt="a cat <hypernet:tinyhn:1>")
    assert _px(hn) != _px(base)
    assert _px(_gen(state)) == _px(base)
    missing = _gen(state, prompt="a cat <hypernet:nothere:1>")
    assert any("nothere" in c for c in missing.info["comments"])


def test_vae_option_and_override(state, comp):
    vae, cfg = tiny_vae(seed=9)
    write_vae_file(os.path.join(state.config.vae_models_dir, "other.vae.safetensors"), vae, cfg)
    state.vae_registry.refresh()
    base = _gen(state)
    other = _gen(state, override_settings={"sd_vae": "other.vae.safetensors"})
    assert _px(other) != _px(base)
    params = parse_generation_parameters(other.infotexts[0])
    assert params["VAE"] == "other.vae.safetensors" and len(params["VAE hash"]) == 10
    assert other.info["sd_vae_name"] == "other.vae.safetensors"
    none = _gen(state, override_settings={"sd_vae": "None"})
    assert _px(none) == _px(base) and "VAE hash" not in none.infotexts[0]
    assert _px(_gen(state)) == _px(base)  # the checkpoint's own VAE is back


def test_clip_skip_changes_the_image_and_is_written(state):
    base = _gen(state)
    skip = _gen(state, override_settings={"CLIP_stop_at_last_layers": 2})
    assert _px(skip) != _px(base)
    assert "Clip skip: 2" in skip.infotexts[0] and skip.info["clip_skip"] == 2
    field = _gen(state, clip_skip=2)
    assert _px(field) == _px(skip)


def test_styles_and_comments(state):
    with open(state.config.styles_file, "w", encoding="utf-8") as f:
        f.write('name,prompt,negative_prompt\nmoody,"{prompt}, dark, moody",blurry\n')
    state.styles.reload()
    res = _gen(state, prompt="a cat", styles=("moody", "nosuchstyle"))
    assert res.info["all_prompts"] == ["a cat, dark, moody"]
    assert res.info["all_negative_prompts"] == ["blurry"]
    assert res.info["styles"] == ["moody", "nosuchstyle"]
    assert res.infotexts[0].startswith("a cat, dark, moody\nNegative prompt: blurry\n")
    # A1111 strips comments after applying styles (its comments script runs in process()), so a comment at the end
    # of the prompt swallows the style text appended to its line; comment lines are replaced by a newline
    commented = _gen(state, prompt="# my note\na cat # cute", negative_prompt="ugly # hm")
    assert commented.info["all_prompts"] == ["\na cat \n"]
    assert commented.info["all_negative_prompts"] == ["ugly \n"]
    assert _px(commented) == _px(_gen(state, prompt="a cat", negative_prompt="ugly"))


def test_prompt_editing_and_and_change_the_image(state):
    base = _gen(state, steps=4)
    edited = _gen(state, steps=4, prompt="a [cat:dog:2]")
    assert _px(edited) != _px(base)
    assert _px(_gen(state, steps=4, prompt="a [cat:dog:10]")) == _px(base)  # switch after the last step
    composed = _gen(state, steps=4, prompt="a cat AND a dog:0.7")
    assert _px(composed) != _px(base)
