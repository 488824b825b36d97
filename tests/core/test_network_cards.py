"""webui.core.networks.cards: the Extra Networks pages' cards (A1111 ui_extra_networks*): previews beside files,
sidecar metadata, LoRA training tags, prompts and toggling, search/folder/sort/pages, and 2,000 LoRA files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from webui.core.networks import cards as nc
from webui.core.networks.lora import LoraRegistry


def fake_lora(path, **metadata) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 1)}, str(path),
              metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    return str(path)


def test_preview_description_and_sidecar(tmp_path):
    f = fake_lora(tmp_path / "Lora" / "style" / "ink.safetensors")
    stem = f[:-len(".safetensors")]
    assert nc.find_preview(stem) is None
    Image.new("RGB", (8, 8)).save(stem + ".preview.png")
    assert nc.find_preview(stem) == stem + ".preview.png"
    Image.new("RGB", (8, 8)).save(stem + ".png")  # A1111 looks for name.png before name.preview.png
    assert nc.find_preview(stem) == stem + ".png"
    with open(stem + ".txt", "w") as fh:
        fh.write("from a txt")
    assert nc.find_description(stem) == "from a txt"

    # the sidecar: other keys kept, the editor's written over them, atomically, A1111's indent
    with open(stem + ".json", "w") as fh:
        json.dump({"custom": 1, "notes": "old"}, fh)
    written = nc.write_user_metadata(f, {"notes": "new", "preferred weight": 0.7})
    assert written == {"custom": 1, "notes": "new", "preferred weight": 0.7}
    assert json.loads(Path(stem + ".json").read_text()) == written
    assert not [p for p in os.listdir(os.path.dirname(f)) if p.endswith(".tmp")]
    # a broken sidecar reads as empty rather than breaking the page
    with open(stem + ".json", "w") as fh:
        fh.write("{not json")
    assert nc.read_user_metadata(f) == {}


def test_training_tags_and_table():
    meta = {"ss_tag_frequency": {"10_ink": {"ink": 5, " cat": 2}, "5_more": {"cat": 4, "dog": 1}},
            "ss_num_train_images": "30", "ss_output_name": "inky"}
    assert nc.training_tags(meta) == [("cat", 6), ("ink", 5), ("dog", 1)]
    assert nc.training_tags({"ss_tag_frequency": json.dumps(meta["ss_tag_frequency"])})[0] == ("cat", 6)
    assert nc.training_tags({"ss_tag_frequency": "garbage"}) == []
    assert ("Output name", "inky") in nc.training_table(meta)
    assert ("Training images", "30") in nc.training_table(meta)


def test_prompts_and_toggle():
    card = nc.Card("lora", "ink", "/x/ink.safetensors", "", None, "", 0, 0, "ink", ("ink",),
                   user_metadata={"preferred weight": 0.8, "activation text": "inkstyle"})
    assert nc.card_prompt("lora", card) == "<lora:ink:0.8> inkstyle"
    assert nc.card_prompt("lora", card, lora_name="alias") == "<lora:alias:0.8> inkstyle"
    plain = nc.Card("lora", "ink", "/x/ink.safetensors", "", None, "", 0, 0, "ink", ("ink",))
    assert nc.card_prompt("lora", plain, default_multiplier=0.6) == "<lora:ink:0.6>"
    assert nc.card_prompt("hypernetworks", plain) == "<hypernet:ink:1>"
    assert nc.card_prompt("textual_inversion", plain) == "ink"

    # a click adds the text after the separator; a second removes it (any weight the user typed since)
    p = nc.toggle_in_prompt("a cat", "<lora:ink:0.8> inkstyle")
    assert p == "a cat <lora:ink:0.8> inkstyle"
    assert nc.toggle_in_prompt(p, "<lora:ink:0.8> inkstyle") == "a cat"
    assert nc.toggle_in_prompt("a cat <lora:ink:1.3>, red", "<lora:ink:0.8>") == "a cat, red"
    assert nc.toggle_in_prompt("a cat, <lora:other:1>", "<lora:ink:1>") == "a cat, <lora:other:1> <lora:ink:1>"
    assert nc.toggle_in_prompt("", "<lora:ink:1>") == "<lora:ink:1>"
    assert nc.toggle_in_prompt("a cat emb", "emb") == "a cat"
    assert nc.toggle_in_prompt("a cat", "emb", ", ") == "a cat, emb"


def test_select_search_folder_sort_pages():
    def card(name, folder, mtime):
        return nc.Card("lora", name, f"/r/{folder}/{name}.safetensors", folder, None, f"about {name}", mtime,
                       mtime, f"{folder}/{name}".lower(), (f"{folder}/{name}", name, f"about {name}"))

    cards = [card("b", "chars", 3), card("a", "chars/anime", 1), card("c", "styles", 2)]
    assert nc.folders(cards) == ["chars", "chars/anime", "styles"]

    def names(r):
        return [c.name for c in r.cards]

    assert names(nc.select(cards, nc.PageQuery())) == ["a", "b", "c"]  # Path: chars/anime/a < chars/b < styles/c
    assert names(nc.select(cards, nc.PageQuery(sort="Name", descending=True))) == ["c", "b", "a"]
    assert names(nc.select(cards, nc.PageQuery(sort="Date Modified"))) == ["a", "c", "b"]
    assert names(nc.select(cards, nc.PageQuery(folder="chars"))) == ["a", "b"]  # a folder includes its sub-folders
    assert names(nc.select(cards, nc.PageQuery(search="ABOUT c"))) == ["c"]  # A1111: the text as one substring
    assert names(nc.select(cards, nc.PageQuery(search="anime"))) == ["a"]
    r = nc.select(cards, nc.PageQuery(page=2, page_size=2))
    assert (names(r), r.total, r.pages, r.page) == (["c"], 3, 2, 2)
    assert nc.select(cards, nc.PageQuery(page=99, page_size=2)).page == 2


def test_catalog_lists_edits_and_refuses_foreign_files(tmp_path):
    lora_dir = tmp_path / "models" / "Lora"
    fake_lora(lora_dir / "ink.safetensors", ss_output_name="inky", ss_tag_frequency={"1_x": {"ink": 3}})
    loras = LoraRegistry([str(lora_dir)])
    loras.refresh()
    settings = {"extra_networks_default_multiplier": 1.0, "lora_preferred_name": "Alias from file"}
    cat = nc.Catalog(loras=loras, options=settings.get)
    (card,) = cat.cards("lora")
    assert card.training_tags == (("ink", 3),) and "ink" in card.search_terms
    assert cat.prompt("lora", card) == "<lora:inky:1>"  # the alias from the file, as A1111's default
    card = cat.save_metadata("lora", card.filename, {"preferred weight": 0.5, "description": "d", "bogus": 1})
    assert cat.prompt("lora", card) == "<lora:inky:0.5>" and card.description == "d"
    assert json.loads((lora_dir / "ink.json").read_text()) == {"preferred weight": 0.5, "description": "d"}
    card = cat.replace_preview("lora", card.filename, Image.new("RGB", (16, 16), "red"), "a red square")
    assert card.preview == str(lora_dir / "ink.png")
    with Image.open(card.preview) as im:
        assert im.info["parameters"] == "a red square"
    with pytest.raises(nc.CardError):
        cat.save_metadata("lora", str(tmp_path / "elsewhere.safetensors"), {"notes": "x"})
    fake_lora(lora_dir / "new.safetensors")
    assert len(cat.cards("lora")) == 1 and len(cat.refresh("lora")) == 2  # 🔄 rescans


def test_two_thousand_loras_stay_responsive(tmp_path):
    """2,000 LoRA files in 20 folders, a tenth with previews: listing once, then what every keystroke in the search
    box costs (filter + sort + one page), and rendering that page's HTML -- measured, with generous bounds."""
    from webui.ui import extra_networks as en

    lora_dir = tmp_path / "Lora"
    for i in range(2000):
        path = fake_lora(lora_dir / f"set{i % 20:02d}" / f"lora{i:04d}.safetensors",
                         ss_tag_frequency={"1_x": {f"tag{i % 7}": 1}})
        if i % 10 == 0:
            Image.new("RGB", (64, 96), (i % 255, 0, 0)).save(path[:-len(".safetensors")] + ".preview.png")
    loras = LoraRegistry([str(lora_dir)])
    t0 = time.perf_counter()
    loras.refresh()
    t1 = time.perf_counter()
    options = {"extra_networks_default_multiplier": 1.0}.get
    state = SimpleNamespace(extra_networks=nc.Catalog(loras=loras, options=options))
    cat = en.catalog(state)
    all_cards = cat.cards("lora")
    t2 = time.perf_counter()
    result = nc.select(all_cards, nc.PageQuery(search="tag3", sort="Name", descending=True, page_size=en.PAGE_SIZE))
    t3 = time.perf_counter()
    page_html = en.cards_html(state, "txt2img", "lora", result)
    t4 = time.perf_counter()
    page_html_again = en.cards_html(state, "txt2img", "lora", result)
    t5 = time.perf_counter()
    print(f"\n2000 LoRA: registry scan {t1 - t0:.2f}s, cards {t2 - t1:.2f}s, search+sort+page {1000 * (t3 - t2):.1f}ms, "
          f"page HTML {1000 * (t4 - t3):.0f}ms cold / {1000 * (t5 - t4):.0f}ms warm, {len(page_html) // 1024} KiB")
    assert len(all_cards) == 2000 and result.total == 286 and len(result.cards) == en.PAGE_SIZE
    assert page_html.count("class='card") == en.PAGE_SIZE and page_html == page_html_again
    assert len(nc.folders(all_cards)) == 20
    assert t3 - t2 < 0.5  # a keystroke
    assert t5 - t4 < 0.5  # a page with its thumbnails cached
    assert len(page_html) < 1_000_000
