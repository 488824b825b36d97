"""Checkpoint/VAE registries and the sha256 cache, against A1111's naming, ordering and cache.json layout.

The registry never loads the files, so small dummy files stand in for checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest

from webui.core.models import registry as reg
from webui.core.models.registry import (
    CheckpointNotFound,
    CheckpointRegistry,
    HashCache,
    VaeInfo,
    VaeRegistry,
    model_hash,
)


def write(path, data: bytes = b"x") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def count_hashing(monkeypatch):
    """Count calls of the full-file hash (the expensive part the cache exists to avoid)."""
    calls = []
    real = reg.calculate_sha256

    def counting(filename):
        calls.append(os.fspath(filename))
        return real(filename)

    monkeypatch.setattr(reg, "calculate_sha256", counting)
    return calls


@pytest.fixture
def models(tmp_path):
    sd = tmp_path / "models" / "Stable-diffusion"
    write(sd / "b.safetensors", b"b")
    write(sd / "a10.ckpt", b"a10")
    write(sd / "a2.safetensors", b"a2")
    write(sd / "A1.safetensors", b"A1")
    write(sd / "A1.yaml", b"model: {}")
    write(sd / "sub10" / "z.safetensors", b"sub10z")
    write(sd / "sub2" / "deep" / "y.safetensors", b"sub2deepy")
    write(sd / "sub2" / "x.safetensors", b"sub2x")
    write(sd / "baked.vae.safetensors", b"vae")
    write(sd / "baked.vae.ckpt", b"vae")
    write(sd / "notes.txt", b"not a model")
    write(sd / "UPPER.SAFETENSORS", b"upper")
    return sd


# -- listing --------------------------------------------------------------------------------------------------------


def test_lists_in_a1111_walk_order_and_skips_vae_and_other_files(models):
    r = CheckpointRegistry(models)
    names = [i.name for i in r.refresh()]
    # root folder first (natural, case-insensitive order), then sub-folders in natural order of their path
    assert names == [
        "A1.safetensors",
        "a2.safetensors",
        "a10.ckpt",
        "b.safetensors",
        "UPPER.SAFETENSORS",
        "sub2/x.safetensors",
        "sub2/deep/y.safetensors",
        "sub10/z.safetensors",
    ]
    assert r.list() == r.refresh()


def test_constructor_does_no_io(tmp_path):
    r = CheckpointRegistry(tmp_path / "missing")
    assert r.list() == []
    assert r.refresh() == []


def test_info_fields_without_hash(models):
    r = CheckpointRegistry(models)
    infos = {i.name: i for i in r.refresh()}

    a1 = infos["A1.safetensors"]
    assert a1.filename == os.path.join(str(models), "A1.safetensors")
    assert os.path.isabs(a1.filename)
    assert a1.model_name == "A1"
    assert a1.sha256 is None and a1.shorthash is None
    assert a1.title == "A1.safetensors"  # no hash known yet: title is the bare name, as in A1111
    assert a1.config == os.path.join(str(models), "A1.yaml")
    assert infos["b.safetensors"].config is None

    deep = infos["sub2/deep/y.safetensors"]
    assert deep.model_name == "sub2_deep_y"
    assert deep.stem == "y"
    assert r.titles() == [i.title for i in r.list()]


def test_ckpt_file_first_and_extra_dirs_before_models_dir(tmp_path, models):
    extra = tmp_path / "elsewhere"
    write(extra / "e1.safetensors", b"e1")
    write(extra / "inner" / "e2.ckpt", b"e2")
    lone = write(tmp_path / "lone" / "single.ckpt", b"single")

    r = CheckpointRegistry(models, extra_dirs=[extra], ckpt_file=lone)
    infos = r.refresh()
    assert [i.name for i in infos[:4]] == ["single.ckpt", "e1.safetensors", "inner/e2.ckpt", "A1.safetensors"]
    assert infos[0].filename == lone
    assert infos[2].model_name == "inner_e2"
    assert r.resolve("single") is infos[0]


def test_ckpt_file_inside_models_dir_is_listed_once(models):
    ckpt = os.path.join(str(models), "b.safetensors")
    r = CheckpointRegistry(models, ckpt_file=ckpt)
    infos = r.refresh()
    assert infos[0].name == "b.safetensors"
    assert [i.name for i in infos].count("b.safetensors") == 1


def test_missing_ckpt_file_is_ignored(tmp_path, models):
    r = CheckpointRegistry(models, ckpt_file=tmp_path / "nope.safetensors")
    assert r.refresh()[0].name == "A1.safetensors"


def test_refresh_picks_up_new_and_removed_files(models):
    r = CheckpointRegistry(models)
    r.refresh()
    write(models / "new.safetensors", b"new")
    os.remove(models / "b.safetensors")
    names = [i.name for i in r.refresh()]
    assert "new.safetensors" in names and "b.safetensors" not in names
    assert r.resolve("b") is None


# -- hashing and aliases --------------------------------------------------------------------------------------------


def test_ensure_hash_updates_title_in_place_and_returns_new_info(models, count_hashing):
    r = CheckpointRegistry(models)
    before = r.refresh()
    a2 = r.resolve("a2.safetensors")
    new = r.ensure_hash(a2)

    assert new.sha256 == sha(b"a2")
    assert new.title == f"a2.safetensors [{sha(b'a2')[:10]}]"
    assert a2.sha256 is None  # frozen: the old object is untouched
    after = r.list()
    assert [i.filename for i in after] == [i.filename for i in before]  # same position
    assert after[1] is new
    assert r.ensure_hash(new) is new
    assert len(count_hashing) == 1


def test_resolve_accepts_all_a1111_aliases(tmp_path):
    sd = tmp_path / "Stable-diffusion"
    # > 1 MiB so the old 8-hex hash (64 KiB at offset 1 MiB) differs between files
    data = b"\0" * 0x100000 + b"model one"
    write(sd / "sub" / "one.safetensors", data)
    write(sd / "two.ckpt", b"\0" * 0x100000 + b"model two")
    r = CheckpointRegistry(sd)
    r.refresh()
    info = r.ensure_hash(r.resolve("sub/one.safetensors"))
    full = sha(data)
    old = hashlib.sha256(b"model one").hexdigest()[:8]
    assert model_hash(info.filename) == old

    for alias in [
        f"sub/one.safetensors [{full[:10]}]",  # title
        "sub/one.safetensors",  # relative file name
        "one",  # file stem (infotext "Model:")
        "sub_one",  # model_name
        full[:10],  # short hash (infotext "Model hash:")
        full,  # sha256
        f"one [{full[:10]}]",  # short title
        old,  # old 8-hex hash
        f"sub/one.safetensors [{old}]",  # old-style title
    ]:
        assert r.resolve(alias) == info, alias

    assert r.resolve("sub/one") is None  # not an alias; closest() handles loose names
    assert r.resolve("") is None and r.resolve(None) is None
    assert r.resolve(full[:10].upper()) is None  # exact only


def test_hash_aliases_only_after_hashing(models):
    r = CheckpointRegistry(models)
    r.refresh()
    h = sha(b"b")
    assert r.resolve(h[:10]) is None
    r.ensure_hash(r.resolve("b"))
    assert r.resolve(h[:10]).name == "b.safetensors"
    assert r.resolve("b.safetensors").sha256 == h  # name aliases now point at the hashed info


def test_closest_match(models):
    r = CheckpointRegistry(models)
    r.refresh()
    hashed = r.ensure_hash(r.resolve("a10.ckpt"))

    assert r.closest("a10") is hashed  # exact alias first
    assert r.closest("x.safe").name == "sub2/x.safetensors"  # substring of the title
    assert r.closest("safetensors").name == "b.safetensors"  # shortest title wins (ties: list order)
    # A stale hash in an infotext: strip the trailing " [hash]" and search again.
    assert r.closest("sub2/x.safetensors [0123456789]").name == "sub2/x.safetensors"
    assert r.closest("a10.ckpt [deadbeef00]") is hashed
    assert r.closest("nothing like it") is None
    assert r.closest("") is None
    assert r.resolve("x.safe") is None  # resolve stays exact


def test_get_or_raise_lists_titles(models):
    r = CheckpointRegistry(models)
    r.refresh()
    assert r.get_or_raise("b").name == "b.safetensors"
    with pytest.raises(CheckpointNotFound) as exc:
        r.get_or_raise("missing-model")
    assert isinstance(exc.value, KeyError)
    msg = str(exc.value)
    assert msg.startswith("model 'missing-model' not found")
    assert "A1.safetensors" in msg and "sub2/x.safetensors" in msg
    assert exc.value.choices == r.titles()
    assert exc.value.name == "missing-model"


# -- cache.json -----------------------------------------------------------------------------------------------------


def test_cache_json_shape_and_reuse_across_instances(tmp_path, models, count_hashing):
    cache_path = tmp_path / "cache.json"
    r1 = CheckpointRegistry(models, hash_cache=HashCache(cache_path))
    r1.refresh()
    a1 = r1.ensure_hash(r1.resolve("A1"))
    deep = r1.ensure_hash(r1.resolve("sub2/deep/y.safetensors"))
    assert len(count_hashing) == 2

    data = json.loads(cache_path.read_text(encoding="utf8"))
    assert set(data) == {"hashes"}
    assert data["hashes"]["checkpoint/A1.safetensors"] == {
        "mtime": os.path.getmtime(a1.filename),
        "sha256": sha(b"A1"),
    }
    assert data["hashes"]["checkpoint/sub2/deep/y.safetensors"]["sha256"] == deep.sha256
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # temp file replaced, not left behind

    # A fresh process: titles carry the hash straight from the cache, and ensure_hash does not re-hash.
    r2 = CheckpointRegistry(models, hash_cache=HashCache(cache_path))
    infos = {i.name: i for i in r2.refresh()}
    assert infos["A1.safetensors"].title == f"A1.safetensors [{sha(b'A1')[:10]}]"
    assert infos["b.safetensors"].sha256 is None
    assert r2.resolve(sha(b"A1")[:10]) == infos["A1.safetensors"]
    assert r2.ensure_hash(infos["A1.safetensors"]) == infos["A1.safetensors"]
    assert len(count_hashing) == 2


def test_changed_mtime_rehashes(tmp_path, models, count_hashing):
    cache_path = tmp_path / "cache.json"
    r = CheckpointRegistry(models, hash_cache=HashCache(cache_path))
    r.refresh()
    info = r.ensure_hash(r.resolve("b"))
    assert len(count_hashing) == 1

    write(info.filename, b"b changed")
    st = os.stat(info.filename)
    os.utime(info.filename, (st.st_atime, st.st_mtime + 10))

    r2 = CheckpointRegistry(models, hash_cache=HashCache(cache_path))
    stale = r2.refresh()
    assert next(i for i in stale if i.name == "b.safetensors").sha256 is None  # cache entry no longer trusted
    new = r2.ensure_hash(r2.resolve("b"))
    assert new.sha256 == sha(b"b changed")
    assert len(count_hashing) == 2
    assert json.loads(cache_path.read_text())["hashes"]["checkpoint/b.safetensors"]["mtime"] == os.path.getmtime(
        info.filename
    )


def test_existing_a1111_cache_sections_are_preserved(tmp_path, models):
    cache_path = tmp_path / "cache.json"
    b = os.path.join(str(models), "b.safetensors")
    existing = {
        "hashes-addnet": {"lora/x": {"mtime": 1.5, "sha256": "ab" * 32}},
        "safetensors-metadata": {"checkpoint/b.safetensors": {"mtime": 2.0, "value": {"k": "v"}}},
        "hashes": {
            "checkpoint/b.safetensors": {"mtime": os.path.getmtime(b), "sha256": "cd" * 32},
            "lora/other": {"mtime": 3.0, "sha256": "ef" * 32},
        },
    }
    cache_path.write_text(json.dumps(existing), encoding="utf8")

    r = CheckpointRegistry(models, hash_cache=HashCache(cache_path))
    infos = {i.name: i for i in r.refresh()}
    assert infos["b.safetensors"].sha256 == "cd" * 32  # what A1111 cached is trusted as is
    r.ensure_hash(infos["a2.safetensors"])

    data = json.loads(cache_path.read_text(encoding="utf8"))
    assert data["hashes-addnet"] == existing["hashes-addnet"]
    assert data["safetensors-metadata"] == existing["safetensors-metadata"]
    assert data["hashes"]["lora/other"] == existing["hashes"]["lora/other"]
    assert data["hashes"]["checkpoint/a2.safetensors"]["sha256"] == sha(b"a2")


def test_corrupt_cache_is_set_aside(tmp_path, models):
    cache_path = tmp_path / "cache.json"
    cache_path.write_text("{not json", encoding="utf8")
    cache = HashCache(cache_path)
    assert cache.sha256(os.path.join(str(models), "b.safetensors"), "checkpoint/b.safetensors") == sha(b"b")
    assert json.loads(cache_path.read_text())["hashes"]["checkpoint/b.safetensors"]["sha256"] == sha(b"b")
    assert (tmp_path / "cache.json.bad").read_text() == "{not json"


def test_hash_cache_is_thread_safe_and_hashes_once(tmp_path, monkeypatch):
    f = write(tmp_path / "m.safetensors", b"m" * 1000)
    calls = []
    real = reg.calculate_sha256

    def slow(filename):
        calls.append(filename)
        time.sleep(0.05)
        return real(filename)

    monkeypatch.setattr(reg, "calculate_sha256", slow)
    cache = HashCache(tmp_path / "cache.json")
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.sha256(f, "checkpoint/m"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [sha(b"m" * 1000)] * 8
    assert len(calls) == 1


def test_chunked_hash_matches_whole_file_hash(tmp_path):
    data = os.urandom(reg.HASH_BLOCK_SIZE * 2 + 123)
    f = write(tmp_path / "big.ckpt", data)
    assert reg.calculate_sha256(f) == sha(data)


def test_no_hashing_leaves_sha256_none_but_uses_cache(tmp_path, models, count_hashing):
    cache_path = tmp_path / "cache.json"
    r = CheckpointRegistry(models, hash_cache=HashCache(cache_path), no_hashing=True)
    r.refresh()
    info = r.ensure_hash(r.resolve("b"))
    assert info.sha256 is None and info.title == "b.safetensors"
    assert count_hashing == []
    assert not cache_path.exists()

    # A hash cached earlier (by a run with hashing on) is still used, as in A1111.
    CheckpointRegistry(models, hash_cache=HashCache(cache_path)).ensure_hash(info)
    r2 = CheckpointRegistry(models, hash_cache=HashCache(cache_path), no_hashing=True)
    r2.refresh()
    assert r2.resolve("b").sha256 == sha(b"b")


# -- VAE ------------------------------------------------------------------------------------------------------------


def test_vae_listing(tmp_path, models):
    vae_dir = tmp_path / "models" / "VAE"
    write(vae_dir / "vae10.safetensors")
    write(vae_dir / "vae2.pt")
    write(vae_dir / "sub" / "Anything.ckpt")
    write(vae_dir / "readme.txt")
    write(models / "sub2" / "inner.vae.pt")

    r = VaeRegistry(vae_dir, models)
    infos = r.refresh()
    assert [i.model_name for i in infos] == [
        "Anything.ckpt",
        "baked.vae.ckpt",
        "baked.vae.safetensors",
        "inner.vae.pt",
        "vae2.pt",
        "vae10.safetensors",
    ]
    assert r.names() == [i.model_name for i in infos]
    assert r.resolve("vae2.pt") == VaeInfo("vae2.pt", os.path.join(str(vae_dir), "vae2.pt"))
    assert r.resolve(os.path.join(str(vae_dir), "sub", "Anything.ckpt")).model_name == "Anything.ckpt"
    assert r.resolve("vae2") is None
    assert r.resolve("Automatic") is None  # "Automatic"/"None" are the caller's business
    # plain checkpoints in models/Stable-diffusion are not VAEs
    assert r.resolve("b.safetensors") is None


def test_vae_extra_dirs_and_duplicates(tmp_path, models):
    vae_dir = tmp_path / "models" / "VAE"
    ckpt_dir = tmp_path / "ckpts"
    more_vae = tmp_path / "more-vae"
    write(vae_dir / "same.pt", b"1")
    write(more_vae / "same.pt", b"2")
    write(more_vae / "only-here.safetensors")
    write(ckpt_dir / "x.vae.safetensors")
    write(ckpt_dir / "not-a-vae.safetensors")

    r = VaeRegistry(vae_dir, models, extra_dirs=[ckpt_dir], extra_vae_dirs=[more_vae])
    assert r.names() == []  # nothing until refresh()
    r.refresh()
    names = r.names()
    assert "x.vae.safetensors" in names and "only-here.safetensors" in names
    assert "not-a-vae.safetensors" not in names
    assert r.resolve("same.pt").filename == os.path.join(str(more_vae), "same.pt")  # later source wins


def test_vae_near_checkpoint_uses_a1111_prefix_rule(tmp_path, models):
    vae_dir = tmp_path / "models" / "VAE"
    write(vae_dir / "other.pt")
    r = VaeRegistry(vae_dir, models)
    r.refresh()
    assert r.near_checkpoint(os.path.join(str(models), "baked.safetensors")).model_name == "baked.vae.ckpt"
    assert r.near_checkpoint(os.path.join(str(models), "b.safetensors")).model_name == "baked.vae.ckpt"  # prefix
    assert r.near_checkpoint(os.path.join(str(models), "zzz.safetensors")) is None


def test_vae_registry_missing_folders(tmp_path):
    r = VaeRegistry(tmp_path / "no-vae", tmp_path / "no-sd")
    assert r.list() == [] and r.refresh() == []


def test_unwritable_cache_still_returns_the_hash(tmp_path):
    f = write(tmp_path / "m.ckpt", b"m")
    blocker = write(tmp_path / "blocker", b"")  # a file where the cache's folder should be
    cache = HashCache(os.path.join(blocker, "cache.json"))
    assert cache.sha256(f, "checkpoint/m.ckpt") == sha(b"m")
    assert cache.sha256_from_cache(f, "checkpoint/m.ckpt") == sha(b"m")  # kept in memory
