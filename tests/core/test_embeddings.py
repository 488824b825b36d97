"""Textual-inversion embeddings: A1111's file layouts, its loaded/skipped rule, reload rule, name lookup and the
vector substitution, on the tiny checkpoints' real text encoders and the real CLIP BPE tokenizer."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest
import torch

from tests.fixtures import embeddings as fx
from tests.fixtures.checkpoints import write_malicious_checkpoint
from webui.core.devices import plan_devices
from webui.core.networks.embeddings import (
    Embedding,
    EmbeddingDatabase,
    embedding_fixes,
    embedding_vectors_for,
    encode_with_embeddings,
    substitute_embeddings,
    ti_hashes_infotext,
)
from webui.core.models.loader import load_components
from webui.core.models.registry import HashCache
from webui.core.types import CheckpointInfo


def _load(path, tokenizer_dir):
    info = CheckpointInfo(filename=str(path), name=os.path.basename(path), model_name="m")
    return load_components(info, plan_devices(use_cpu=["all"]), tokenizer_dir)


@pytest.fixture(scope="module")
def sd1(models_root, tokenizer_dir):
    return _load(models_root[1]["SD1"], tokenizer_dir)


@pytest.fixture(scope="module")
def sdxl(models_root, tokenizer_dir):
    return _load(models_root[1]["SDXL"], tokenizer_dir)


@pytest.fixture(scope="module")
def refiner(tmp_path_factory, tokenizer_dir):
    from webui.core.models.demo_model import write_tiny_checkpoint

    folder = tmp_path_factory.mktemp("refiner")
    path = write_tiny_checkpoint(str(folder / "refiner.safetensors"), "SDXL-refiner", seed=4)
    return _load(path, tokenizer_dir)


def width(encoder) -> int:
    return encoder.get_input_embeddings().weight.shape[1]


def item(step=None, sd_checkpoint=None, sd_checkpoint_name=None, shape=None, vectors=None):
    return {
        "step": step,
        "sd_checkpoint": sd_checkpoint,
        "sd_checkpoint_name": sd_checkpoint_name,
        "shape": shape,
        "vectors": vectors,
    }


def test_every_layout_is_sorted_into_loaded_or_skipped(sd1, tmp_path):
    w = width(sd1.text_encoder)
    emb = tmp_path / "embeddings"
    fx.write_a1111_embedding(str(emb / "a1111-style.pt"), fx.random_vectors(2, w, 1), step=1500,
                             sd_checkpoint="7460a6fa", sd_checkpoint_name="v1-5-pruned")
    fx.write_diffusers_embedding(str(emb / "concepts" / "Cat-toy.bin"), "<cat-toy>", fx.random_vectors(1, w, 2)[0])
    fx.write_kohya_embedding(str(emb / "kohya_emb.safetensors"), fx.random_vectors(3, w, 3))
    fx.write_png_embedding(str(emb / "trained-500.png"), fx.random_vectors(2, w, 4), "png-stored", step=500)
    fx.write_hidden_data_embedding(str(emb / "card.png"), fx.random_vectors(2, w, 5), "hidden-card")
    # a thumbnail that even carries an embedding chunk is still only a thumbnail (A1111's ".preview" rule)
    fx.write_png_embedding(str(emb / "kohya_emb.preview.png"), fx.random_vectors(1, w, 6), "not-me")
    fx.write_kohya_embedding(str(emb / "too-wide.safetensors"), fx.random_vectors(4, w + 16, 7))
    fx.write_sdxl_embedding(str(emb / "xl-pair.safetensors"), fx.random_vectors(2, w, 8), fx.random_vectors(2, w, 9))
    (emb / "empty.pt").write_bytes(b"")
    (emb / "notes.txt").write_text("not an embedding")
    (emb / "broken.safetensors").write_bytes(b"\x00garbage")
    write_malicious_checkpoint(str(emb / "evil.pt"))
    if os.path.exists("/tmp/webui-test-pwned"):
        os.unlink("/tmp/webui-test-pwned")

    db = EmbeddingDatabase([str(emb)])
    assert db.api_listing() == {"loaded": {}, "skipped": {}}  # nothing is read before load()
    assert db.load(sd1) is True
    listing = db.api_listing()
    assert listing == {
        "loaded": {
            "a1111-style": item(1500, "7460a6fa", "v1-5-pruned", w, 2),
            "Cat-toy": item(shape=w, vectors=1),  # the name is the file's, not the token's; a 1-D vector is one row
            "hidden-card": item(shape=w, vectors=2),
            "kohya_emb": item(shape=w, vectors=3),
            "png-stored": item(500, shape=w, vectors=2),  # an image embedding is named by the name stored in it
        },
        "skipped": {
            "too-wide": item(shape=w + 16, vectors=4),
            "xl-pair": item(shape=2 * w, vectors=2),  # A1111 reports an SDXL pair's shape as clip_l + clip_g
        },
    }
    assert list(listing["loaded"]) == ["a1111-style", "Cat-toy", "hidden-card", "kohya_emb", "png-stored"]
    assert set(db.errors) == {str(emb / "broken.safetensors"), str(emb / "evil.pt")}
    assert not os.path.exists("/tmp/webui-test-pwned")  # the malicious pickle was refused, not run
    loaded = db.get("a1111-style")
    assert torch.equal(loaded.vec, fx.random_vectors(2, w, 1)) and loaded.vec.dtype == torch.float32
    assert torch.equal(db.get("hidden-card").vec, fx.random_vectors(2, w, 5))
    assert torch.allclose(db.get("png-stored").vec, fx.random_vectors(2, w, 4))


def test_hashes_and_ti_hashes_infotext(sd1, tmp_path):
    w = width(sd1.text_encoder)
    emb = tmp_path / "emb"
    path = fx.write_kohya_embedding(str(emb / "style.safetensors"), fx.random_vectors(1, w, 1))
    fx.write_kohya_embedding(str(emb / "a:b,c.safetensors"), fx.random_vectors(1, w, 2))
    cache = HashCache(str(tmp_path / "cache.json"))
    db = EmbeddingDatabase([str(emb)], hash_cache=cache)
    db.load(sd1)
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    style = db.get("style")
    assert style.hash == sha and style.shorthash == sha[:12]
    assert cache.sha256_from_cache(path, "textual_inversion/style") == sha  # A1111's cache.json title
    odd = db.get("a:b,c")
    # sd_hijack_clip.forward: ":" and "," dropped from names; an earlier pass's value goes after the new ones
    assert ti_hashes_infotext({"style": style}) == f"style: {sha[:12]}"
    both = ti_hashes_infotext({"a:b,c": odd}, previous=f"style: {sha[:12]}")
    assert both == f"abc: {odd.shorthash}, style: {sha[:12]}"
    # --no-hashing: nothing cached -> no hash, and the embedding is left out of TI hashes
    db2 = EmbeddingDatabase([str(emb)], hash_cache=HashCache(None), no_hashing=True)
    db2.load(sd1)
    assert db2.get("style").shorthash is None
    assert ti_hashes_infotext([db2.get("style")]) is None
    assert ti_hashes_infotext([db2.get("style")], previous="x: 1") == "x: 1"


def test_sdxl_takes_matching_pairs_and_refiner_single_clip_g_vectors(sdxl, refiner, tmp_path):
    wl, wg = width(sdxl.text_encoder), width(sdxl.text_encoder_2)
    emb = tmp_path / "emb"
    fx.write_sdxl_embedding(str(emb / "pair.safetensors"), fx.random_vectors(2, wl, 1), fx.random_vectors(2, wg, 2))
    fx.write_kohya_embedding(str(emb / "sd15-style.safetensors"), fx.random_vectors(1, wl, 3))
    fx.write_sdxl_embedding(str(emb / "bad-g.safetensors"), fx.random_vectors(2, wl, 4),
                            fx.random_vectors(2, wg + 8, 5))
    # same total width as the model's pair, wrong split: A1111 would load it and fail mid-generation
    fx.write_sdxl_embedding(str(emb / "lopsided.safetensors"), fx.random_vectors(2, wl - 8, 6),
                            fx.random_vectors(2, wg + 8, 7))
    fx.write_kohya_embedding(str(emb / "g-only.safetensors"), fx.random_vectors(2, width(refiner.text_encoder_2), 8))

    db = EmbeddingDatabase([str(emb)])
    db.load(sdxl)
    assert list(db.loaded) == ["pair"]
    assert db.api_listing()["loaded"]["pair"] == item(shape=wl + wg, vectors=2)
    assert set(db.skipped) == {"sd15-style", "bad-g", "lopsided", "g-only"}
    pair = db.get("pair")
    assert torch.equal(embedding_vectors_for(pair, "sdxl_l"), fx.random_vectors(2, wl, 1))
    assert torch.equal(embedding_vectors_for(pair, "sdxl_g"), fx.random_vectors(2, wg, 2))

    # the refiner has only OpenCLIP-bigG: single tensors of its width, as A1111's expected_shape for it
    assert db.load(refiner) is True  # another model: reloaded though no file changed (A1111 reloads on model load)
    assert set(db.loaded) == {"g-only", "sd15-style"}  # tiny models: CLIP-L and bigG are equally wide
    assert "pair" in db.skipped
    g_only = db.get("g-only")
    assert embedding_vectors_for(g_only, "sdxl_g") is g_only.vec
    with pytest.raises(ValueError, match="sdxl_g"):
        embedding_vectors_for(g_only, "clip")


def test_reload_follows_a1111_folder_mtime_rule(sd1, sdxl, tmp_path):
    w = width(sd1.text_encoder)
    emb = tmp_path / "emb"
    path = fx.write_kohya_embedding(str(emb / "one.safetensors"), fx.random_vectors(1, w, 1))
    db = EmbeddingDatabase([str(emb), str(tmp_path / "missing-dir")])
    assert db.load(sd1) is True
    assert db.load(sd1) is False

    mtime = os.path.getmtime(emb)
    fx.write_kohya_embedding(str(emb / "two.safetensors"), fx.random_vectors(1, w, 2))
    os.utime(emb, (mtime + 10, mtime + 10))  # a new file bumps the folder's mtime
    assert db.load(sd1) is True and set(db.loaded) == {"one", "two"}

    # rewritten in place: the folder's mtime does not move, so A1111 does not notice until a forced refresh
    mtime = os.path.getmtime(emb)
    shutil.copyfile(fx.write_kohya_embedding(str(tmp_path / "new.safetensors"), fx.random_vectors(1, w, 9)), path)
    os.utime(emb, (mtime, mtime))
    assert db.load(sd1) is False
    assert torch.equal(db.get("one").vec, fx.random_vectors(1, w, 1))
    assert db.load(sd1, force=True) is True
    assert torch.equal(db.get("one").vec, fx.random_vectors(1, w, 9))

    assert db.load(sdxl) is True and db.loaded == {}  # model changed: same files, sorted again for the new model


def test_find_embedding_at_position_longest_name_first(sd1, tmp_path):
    w = width(sd1.text_encoder)
    emb = tmp_path / "emb"
    fx.write_kohya_embedding(str(emb / "neon.safetensors"), fx.random_vectors(1, w, 1))
    fx.write_kohya_embedding(str(emb / "neon-city.safetensors"), fx.random_vectors(2, w, 2))
    db = EmbeddingDatabase([str(emb)])
    db.load(sd1)
    tok = sd1.tokenizer

    def ids(text):
        return tok([text], truncation=False, add_special_tokens=False)["input_ids"][0]

    assert len(ids("neon")) == 1 and len(ids("neon-city")) == 3  # the real CLIP BPE: "neon", "-", "city"
    tokens = ids("a neon-city and neon sign")
    assert tokens == ids("a") + ids("neon-city") + ids("and") + ids("neon") + ids("sign")
    found = [db.find_embedding_at_position(tokens, i, tok) for i in range(len(tokens))]
    assert [(e.name if e else None, n) for e, n in found] == [
        (None, 0), ("neon-city", 3), (None, 0), (None, 0), (None, 0), ("neon", 1), (None, 0),
    ]


def test_substitute_embeddings_rows_offsets_and_window_cut():
    x = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(2, 8, 3)
    a = torch.full((2, 3), -1.0)
    b = Embedding(name="b", vectors=4, shape=3, vec=torch.full((4, 3), -2.0))
    out = substitute_embeddings(x, [[(1, a)], [(5, b)]])
    expected = x.clone()
    expected[0, 2:4] = -1.0  # offset 1 counts prompt tokens: rows 1+1 .. 1+2 (row 0 is the start token)
    expected[1, 6:8] = -2.0  # 8 - 5 - 1 = 2 of b's 4 vectors fit before the window ends
    assert torch.equal(out, expected)
    assert torch.equal(x, torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(2, 8, 3))  # input untouched
    assert substitute_embeddings(x, [[], []]) is x
    with pytest.raises(ValueError, match="batch of 2"):
        substitute_embeddings(x, [[(1, a)]])


def _ids(tok, words, n_zeros_after=None):
    """A1111 tokenize_line for one short chunk: start, prompt tokens, end padding to 77."""
    body = []
    for w in words:
        body += [0] * n_zeros_after if w is None else tok([w], add_special_tokens=False)["input_ids"][0]
    return [tok.bos_token_id] + body + [tok.eos_token_id] * (76 - len(body))


def test_text_encoder_sees_the_embedding_from_its_position_on(sd1):
    te, tok = sd1.text_encoder, sd1.tokenizer
    vec = fx.random_vectors(2, width(te), 11)
    ids = torch.tensor([_ids(tok, ["a", None, "cat"], n_zeros_after=2)])
    offset = len(tok(["a"], add_special_tokens=False)["input_ids"][0])
    with torch.no_grad():
        plain = te(input_ids=ids).last_hidden_state
        fixed = encode_with_embeddings(te, ids, [[(offset, vec)]], "sd1").last_hidden_state
    # causal attention: rows before the embedding are untouched, every later row sees it
    assert torch.equal(fixed[0, : offset + 1], plain[0, : offset + 1])
    assert all(not torch.equal(fixed[0, i], plain[0, i]) for i in range(offset + 1, 77))
    assert not te.get_input_embeddings()._forward_hooks  # the hook lived for the call only


def test_embedding_equal_to_a_tokens_own_row_gives_that_token(sd1, sdxl):
    for te, tok, kind in ((sd1.text_encoder, sd1.tokenizer, "sd1"), (sdxl.text_encoder_2, sdxl.tokenizer_2, "sdxl_g")):
        cat = tok(["cat"], add_special_tokens=False)["input_ids"][0]
        assert len(cat) == 1
        row = te.get_input_embeddings().weight[cat].detach().clone()
        pair = Embedding(name="p", vectors=1, shape=2 * row.shape[1], vec_by_encoder={"clip_l": -row, "clip_g": row})
        e = pair if kind == "sdxl_g" else Embedding(name="e", vectors=1, shape=row.shape[1], vec=row)
        with torch.no_grad():
            plain = te(input_ids=torch.tensor([_ids(tok, ["a", "cat", "sitting"])]), output_hidden_states=True)
            ids = torch.tensor([_ids(tok, ["a", None, "sitting"], n_zeros_after=1)])
            fixed = encode_with_embeddings(te, ids, [[(1, e)]], kind, output_hidden_states=True)
        assert torch.equal(fixed.last_hidden_state, plain.last_hidden_state)
        assert torch.equal(fixed.hidden_states[-2], plain.hidden_states[-2])
        if kind == "sdxl_g":
            assert torch.equal(fixed.text_embeds, plain.text_embeds)


def test_fixes_are_used_once_and_the_hook_goes_away_on_error(sd1):
    te, tok = sd1.text_encoder, sd1.tokenizer
    ids = torch.tensor([_ids(tok, ["a", None], n_zeros_after=1)])
    vec = fx.random_vectors(1, width(te), 3)
    with torch.no_grad():
        plain = te(input_ids=ids).last_hidden_state
        with embedding_fixes(te, [[(1, vec)]], "sd1"):
            first = te(input_ids=ids).last_hidden_state
            second = te(input_ids=ids).last_hidden_state  # A1111 clears hijack.fixes after one forward
    assert not torch.equal(first, plain) and torch.equal(second, plain)
    with pytest.raises(RuntimeError, match="boom"):
        with embedding_fixes(te, [[(1, vec)]], "sd1"):
            raise RuntimeError("boom")
    assert not te.get_input_embeddings()._forward_hooks
