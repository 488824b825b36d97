"""img2img's "Interrogate CLIP" / "Interrogate DeepBooru" buttons in a real browser: no image, a missing model file,
then a tiny DeepDanbooru file dropped into models/torch_deepdanbooru while the server runs (it is looked for again
at the next click) and the prompt box filled with its tags."""

from __future__ import annotations

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.fixtures.deepbooru import write_deepbooru_model
from tests.ui.conftest import screenshot
from tests.ui.test_browser import open_tab

pytestmark = pytest.mark.browser


def test_interrogate_deepbooru_fills_the_prompt(page, ui_server, tmp_path):
    _, _, data = ui_server
    open_tab(page, "img2img")
    page.click("#deepbooru")
    expect(page.locator(".toast-body").last).to_contain_text("no image is selected")

    source = tmp_path / "source.png"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(source)
    page.locator("#img2img_image input[type=file]").set_input_files(str(source))
    expect(page.locator("#img2img_image img").first).to_be_visible()
    page.click("#interrogate")
    expect(page.locator(".toast-body").last).to_contain_text("model_base_caption_capfilt_large.pth")
    page.click("#deepbooru")
    expect(page.locator(".toast-body").last).to_contain_text("model-resnet_custom_v3.pt")

    write_deepbooru_model(str(data), ["outdoors", "sky_(blue)", "rating:safe"], scores=[0.8, 0.9, 0.99])
    page.fill("#img2img_prompt textarea", "old prompt")
    page.click("#deepbooru")
    expect(page.locator("#img2img_prompt textarea")).to_have_value(r"outdoors, sky \(blue\)")
    screenshot(page, "img2img_interrogate_deepbooru")
