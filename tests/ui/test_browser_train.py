"""The Train tab in a real browser (issue 16): create an embedding, train it a few steps with the progress shown,
and interrupt a long training, which keeps what was saved."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import expect

from tests.ui.conftest import screenshot
from tests.ui.test_browser import choose, set_number

pytestmark = pytest.mark.browser


def _train_tab(page, sub: str) -> None:
    page.click("#tab_train-button")  # (by id: the sub-tab "Train" has the same name)
    page.locator("#train_tabs").get_by_role("tab", name=sub, exact=True).click()


def test_create_train_and_interrupt_from_the_tab(page, ui_server, tmp_path):
    _, _app, data = ui_server
    ds = tmp_path / "dataset"
    ds.mkdir()
    rng = np.random.default_rng(2)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(ds / f"{i}-pebble.png")

    _train_tab(page, "Create embedding")
    page.fill("#train_new_embedding_name textarea", "uitok")
    page.fill("#train_initialization_text textarea", "stone")
    page.click("#train_create_embedding")
    expect(page.locator("#ti_outcome")).to_contain_text("Created:", timeout=60_000)
    expect(page.locator("#ti_outcome")).to_contain_text("uitok.pt")
    assert (data / "embeddings" / "uitok.pt").exists()

    _train_tab(page, "Train")
    choose(page, "train_embedding", "uitok")
    page.fill("#train_dataset_directory textarea", str(ds))
    set_number(page, "train_training_width", 64)
    set_number(page, "train_training_height", 64)
    page.fill("#train_steps input", "3")
    page.fill("#train_create_image_every input", "0")
    page.fill("#train_save_embedding_every input", "1")
    page.click("#train_train_embedding")
    expect(page.locator("#ti_outcome")).to_contain_text("Training finished at step 3", timeout=120_000)
    assert torch.load(data / "embeddings" / "uitok.pt", weights_only=True)["step"] == 3
    screenshot(page, "train_finished")

    # a long training: the progress shows A1111's textinfo; Interrupt stops it and the file keeps the step reached
    page.fill("#train_steps input", "100000")
    page.click("#train_train_embedding")
    expect(page.locator("#ti_output")).to_contain_text("Loss:", timeout=120_000)
    bar = page.locator("#ti_progress .webui-progress[data-status=running]")
    expect(bar).to_be_visible()
    expect(bar).not_to_contain_text("Loss")  # the multi-line report is shown beside, not in the bar (as A1111)
    screenshot(page, "train_progress")
    started = time.time()
    page.click("#train_interrupt_training")
    expect(page.locator("#ti_outcome")).to_contain_text("Training interrupted at step", timeout=60_000)
    assert time.time() - started < 60
    step = torch.load(data / "embeddings" / "uitok.pt", weights_only=True)["step"]
    assert 3 < step < 100000
    assert not page.errors, page.errors
