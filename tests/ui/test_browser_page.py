"""What A1111 users use between two generations (issue 21), in headless Chromium against the real app: the styles
editor, pasting an infotext whose settings go to "Override settings", the Extra Networks cards and their metadata
editor, progress that survives a page reload, ui-config.json defaults.

One server for the module, over a data dir holding the tiny SD1 checkpoint, two styles files (one matched by a
pattern), and network files; each test reads what a user sees and the files the server wrote.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.ui.conftest import VIEWPORT, screenshot

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page_server(models_root, tmp_path_factory):
    """(base_url, app, data_dir) with styles in styles.csv and in styles-extra.csv (given as a pattern)."""
    from tests.api.live_server import data_dir_with, live_server

    data = data_dir_with(tmp_path_factory.mktemp("page-data"), models_root, "tiny-sd15.safetensors")
    (data / "config.json").write_text('{"sd_model_checkpoint": "tiny-sd15.safetensors"}')
    ckpts = data / "models" / "Stable-diffusion"
    os.symlink(os.readlink(ckpts / "tiny-sd15.safetensors"), ckpts / "tiny-sd15-b.safetensors")
    (data / "styles.csv").write_text('name,prompt,negative_prompt\nbase,"{prompt}, masterpiece",lowres\n',
                                     encoding="utf-8-sig")
    (data / "styles-extra.csv").write_text("name,prompt,negative_prompt\nextra,watercolor,photo\n",
                                           encoding="utf-8-sig")
    from tests.core.test_network_cards import fake_lora

    lora = fake_lora(data / "models" / "Lora" / "styles" / "ink.safetensors",
                     ss_tag_frequency={"10_ink": {"ink wash": 12, "monochrome": 3}})
    (data / "models" / "Lora" / "styles" / "ink.json").write_text('{"preferred weight": 0.8, "notes": "keep"}')
    Image.new("RGB", (64, 96), (30, 120, 200)).save(lora[:-len(".safetensors")] + ".preview.png")
    fake_lora(data / "models" / "Lora" / "other.safetensors")
    (data / "ui-config.json").write_text(json.dumps({"txt2img/Sampling steps/value": 7,
                                                     "txt2img/Width/maximum": 1024,
                                                     "txt2img/Sampling method/value": "No such sampler"}))
    argv = ["--api", "--data-dir", str(data), "--styles-file", str(data / "styles.csv"),
            "--styles-file", str(data / "styles-*.csv")]
    with live_server(argv) as (url, app):
        yield url, app, data


@pytest.fixture
def page(browser, page_server):
    context = browser.new_context(viewport=VIEWPORT)
    p = context.new_page()
    p.set_default_timeout(60_000)
    p.errors = []
    p.on("pageerror", lambda e: p.errors.append(str(e)))
    p.goto(page_server[0] + "/")
    p.wait_for_selector("#txt2img_prompt textarea")
    try:
        yield p
    finally:
        context.close()


def read_styles(path) -> dict[str, tuple[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return {r["name"]: (r["prompt"], r["negative_prompt"]) for r in csv.DictReader(f)}


def dropdown_options(page, elem_id: str) -> list[str]:
    page.locator(f"#{elem_id} input").first.click()
    options = page.locator(f"#{elem_id} li[role=option]")
    expect(options.first).to_be_visible()
    names = [o.get_attribute("aria-label") for o in options.all()]
    page.keyboard.press("Escape")
    return names


def pick_style(page, name: str) -> None:
    box = page.locator("#txt2img_styles_edit_select input").first
    box.fill(name)
    box.press("Enter")


# -- 2. styles editor ------------------------------------------------------------------------------------------------


def test_styles_editor_saves_edits_deletes_and_applies(page, page_server):
    _, _, data = page_server
    assert dropdown_options(page, "txt2img_styles") == ["base", "extra"]
    page.fill("#txt2img_prompt textarea", "a lighthouse, {prompt}")
    page.fill("#txt2img_neg_prompt textarea", "blurry")
    page.click("#txt2img_styles_edit_button")
    expect(page.locator("#txt2img_styles_dialog")).to_be_visible()

    # a new style from the current prompt (📝), saved into the first (main) styles file
    pick_style(page, "my style")
    page.click("#txt2img_style_copy")
    expect(page.locator("#txt2img_edit_style_prompt textarea")).to_have_value("a lighthouse, {prompt}")
    page.fill("#txt2img_edit_style_neg_prompt textarea", "blurry, ugly")
    page.click("#txt2img_edit_style_save")
    expect(page.locator("#txt2img_edit_style_delete")).to_be_visible()
    _wait_for(lambda: "my style" in read_styles(data / "styles.csv"))
    assert read_styles(data / "styles.csv")["my style"] == ("a lighthouse, {prompt}", "blurry, ugly")
    assert "my style" not in read_styles(data / "styles-extra.csv")
    assert not list(data.glob(".styles.csv.*.tmp"))  # written through a temporary file, moved over
    assert dropdown_options(page, "txt2img_styles") == ["base", "extra", "my style"]

    # editing a style of the second file writes it back to that file
    pick_style(page, "extra")
    expect(page.locator("#txt2img_edit_style_prompt textarea")).to_have_value("watercolor")
    page.fill("#txt2img_edit_style_prompt textarea", "oil painting")
    page.click("#txt2img_edit_style_save")
    _wait_for(lambda: read_styles(data / "styles-extra.csv")["extra"] == ("oil painting", "photo"))
    assert "extra" not in read_styles(data / "styles.csv")

    # delete (after the confirm), then apply the selected styles to the prompts (📋)
    page.once("dialog", lambda d: d.accept())
    pick_style(page, "base")
    expect(page.locator("#txt2img_edit_style_delete")).to_be_visible()
    page.click("#txt2img_edit_style_delete")
    _wait_for(lambda: "base" not in read_styles(data / "styles.csv"))
    assert dropdown_options(page, "txt2img_styles") == ["extra", "my style"]
    box = page.locator("#txt2img_styles input").first
    box.fill("my style")
    box.press("Enter")
    page.keyboard.press("Escape")
    expect(page.locator("#txt2img_styles")).to_contain_text("my style")
    page.fill("#txt2img_prompt textarea", "a boat")
    page.click("#txt2img_style_apply_dialog")
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("a lighthouse, a boat")
    expect(page.locator("#txt2img_neg_prompt textarea")).to_have_value("blurry, blurry, ugly")
    screenshot(page, "styles_editor")
    page.click("#txt2img_edit_style_close")
    expect(page.locator("#txt2img_styles_dialog")).to_be_hidden()
    assert not page.errors, page.errors


def _wait_for(check, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            if check():
                return
        except (OSError, KeyError):
            pass
        if time.time() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)



# -- 3. paste -> Override settings -----------------------------------------------------------------------------------


def test_pasted_settings_without_a_control_go_to_override_settings(page, page_server):
    _, app, data = page_server
    overrides = page.locator("#txt2img_override_settings")
    expect(overrides).to_be_hidden()  # empty: not shown
    page.fill("#txt2img_prompt textarea", "a fox\nSteps: 3, Sampler: Euler, Seed: 321, Size: 64x64, CFG scale: 7, "
                                          "Clip skip: 2, ENSD: 31337")
    page.click("#txt2img_paste")
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("a fox")
    expect(overrides).to_be_visible()
    expect(overrides).to_contain_text("Clip skip: 2")
    expect(overrides).to_contain_text("ENSD: 31337")
    screenshot(page, "override_settings")
    # an entry is removed with its ×: that setting is no longer overridden
    overrides.locator(".token", has_text="ENSD: 31337").locator(".token-remove").click()
    expect(overrides).not_to_contain_text("ENSD")
    page.click("#txt2img_generate")
    info = page.locator("#html_info_txt2img")
    expect(info).to_contain_text("Seed: 321", timeout=90_000)
    text = info.inner_text()
    assert "Clip skip: 2" in text and "ENSD" not in text
    # the override is for that generation: the stored option is unchanged
    assert app.state.webui.settings.get("CLIP_stop_at_last_layers") == 1
    expect(overrides).to_contain_text("Clip skip: 2")  # it stays for the next generation, as in A1111

    # Extra Networks' "Replace preview": the gallery's image, with its infotext, beside the LoRA file
    page.locator("#txt2img_extra_networks").get_by_text("Extra Networks").first.click()
    other = page.locator("#txt2img_lora_cards .card[data-name='other']")
    expect(other).to_be_visible()
    assert "background-image" not in (other.get_attribute("style") or "")
    other.locator(".edit-button").click()
    page.click("#txt2img_extra_edit_replace_preview")
    preview = data / "models" / "Lora" / "other.png"
    _wait_for(preview.exists)
    with Image.open(preview) as im:
        assert im.size == (64, 64) and "Seed: 321" in im.info["parameters"]
    expect(page.locator("#txt2img_lora_cards .card[data-name='other']")).to_have_attribute(
        "style", re.compile("data:image/jpeg;base64,"))
    assert not page.errors, page.errors


# -- 1. Extra Networks ----------------------------------------------------------------------------------------------


def test_lora_cards_insert_tags_and_edit_metadata(page, page_server):
    _, _, data = page_server
    page.fill("#txt2img_prompt textarea", "a harbour")
    page.locator("#txt2img_extra_networks").get_by_text("Extra Networks").first.click()
    cards = page.locator("#txt2img_lora_cards .card")
    expect(cards).to_have_count(2)
    expect(page.locator("#txt2img_extra_status")).to_contain_text("2 of 2")
    ink = page.locator("#txt2img_lora_cards .card[data-name='ink']")
    assert "data:image/jpeg;base64," in ink.get_attribute("style")  # its preview beside the file
    # search (by a training tag from the file's metadata), folder filter
    page.fill("#txt2img_extra_search textarea", "monochrome")
    expect(cards).to_have_count(1)
    page.fill("#txt2img_extra_search textarea", "")
    expect(cards).to_have_count(2)
    page.locator("#txt2img_extra_dirs button[data-folder='styles']").click()
    expect(cards).to_have_count(1)
    expect(page.locator("#txt2img_extra_folder input")).to_have_value("styles")
    page.locator("#txt2img_extra_dirs button[data-folder='']").click()
    expect(cards).to_have_count(2)
    # a click adds <lora:name:preferred weight>, a second click removes it
    ink.click()
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("a harbour <lora:ink:0.8>")
    screenshot(page, "extra_networks_lora")
    page.locator("#txt2img_lora_cards .card[data-name='ink']").click()
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("a harbour")

    # the metadata editor writes the .json sidecar (other keys kept) and the card's prompt follows it
    page.locator("#txt2img_lora_cards .card[data-name='ink'] .edit-button").click()
    editor = page.locator("#txt2img_extra_networks_editor")
    expect(editor).to_be_visible()
    expect(editor).to_contain_text("ink wash (12)")  # training tags from the safetensors metadata
    page.fill("#txt2img_extra_edit_description textarea", "Ink wash style")
    page.fill("#txt2img_extra_edit_activation textarea", "ink wash")
    set_slider(page, "txt2img_extra_edit_weight", 0.6)
    page.click("#txt2img_extra_edit_save")
    expect(editor).to_be_hidden()
    sidecar = data / "models" / "Lora" / "styles" / "ink.json"
    _wait_for(lambda: json.loads(sidecar.read_text()).get("description") == "Ink wash style")
    meta = json.loads(sidecar.read_text())
    assert meta["activation text"] == "ink wash" and meta["preferred weight"] == 0.6 and meta["notes"] == "keep"
    expect(page.locator("#txt2img_lora_cards .card[data-name='ink']")).to_contain_text("Ink wash style")
    page.locator("#txt2img_lora_cards .card[data-name='ink']").click()
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("a harbour <lora:ink:0.6> ink wash")

    # the same pages under img2img's prompt
    page.locator("#tabs").get_by_role("tab", name="img2img", exact=True).click()
    page.fill("#img2img_prompt textarea", "a pier")
    page.locator("#img2img_extra_networks").get_by_text("Extra Networks").first.click()
    page.locator("#img2img_lora_cards .card[data-name='ink']").click()
    expect(page.locator("#img2img_prompt textarea")).to_have_value("a pier <lora:ink:0.6> ink wash")
    page.locator("#tabs").get_by_role("tab", name="txt2img", exact=True).click()

    # other pages: an empty one says where files go; a Checkpoints card selects the checkpoint in the top bar
    page.locator("#txt2img_extra_networks_page").get_by_text("Hypernetworks").click()
    expect(page.locator("#txt2img_hypernetworks_cards")).to_contain_text("Nothing here")
    page.locator("#txt2img_extra_networks_page").get_by_text("Checkpoints").click()
    expect(page.locator("#txt2img_checkpoints_cards .card")).to_have_count(2)
    page.locator("#txt2img_checkpoints_cards .card[data-name^='tiny-sd15-b']").click()
    expect(page.locator("#setting_sd_model_checkpoint input")).to_have_value(re.compile(r"^tiny-sd15-b"),
                                                                              timeout=60_000)
    assert not page.errors, page.errors


def set_slider(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


# -- 4. progress after a reload --------------------------------------------------------------------------------------


def test_progress_comes_back_after_a_reload(page):
    """Reload mid-generation: the progress bar comes back (the task followed by its id), Interrupt still reaches
    the job, and its result is shown on the reloaded page."""
    page.fill("#txt2img_prompt textarea", "long job")
    set_slider(page, "txt2img_width", 64)
    set_slider(page, "txt2img_height", 64)
    set_slider(page, "txt2img_steps", 20)
    set_slider(page, "txt2img_batch_count", 30)
    page.fill("#txt2img_seed input", "99")
    page.click("#txt2img_generate")
    running = page.locator("#txt2img_progress .webui-progress[data-status=running]")
    expect(running).to_be_visible(timeout=90_000)
    task_id = running.get_attribute("data-task-id")
    assert task_id and page.evaluate("localStorage.getItem('txt2img_task_id')") == task_id
    page.reload()
    page.wait_for_selector("#txt2img_prompt textarea", timeout=60_000)
    # generous timeouts: on a loaded 2-core machine the reloaded page takes a while to find its task again
    expect(page.locator(f"#txt2img_progress .webui-progress[data-task-id='{task_id}']")).to_be_visible(timeout=30_000)
    expect(page.locator("#txt2img_interrupt")).to_be_visible(timeout=30_000)
    screenshot(page, "txt2img_progress_restored")
    page.click("#txt2img_interrupt")
    expect(page.locator("#txt2img_generate")).to_be_visible(timeout=60_000)
    expect(page.locator("#html_info_txt2img")).to_contain_text("Seed: 99")
    expect(page.locator("#txt2img_gallery img").first).to_be_visible()
    assert page.evaluate("localStorage.getItem('txt2img_task_id')") is None
    assert not page.errors, page.errors


# -- 5. ui-config.json ----------------------------------------------------------------------------------------------


def test_ui_config_defaults_and_the_defaults_page(page, page_server):
    _, _, data = page_server
    path = data / "ui-config.json"
    # read at start: the stored default and limit apply; a value the control cannot take is ignored
    expect(page.locator("#txt2img_steps input[type=number]")).to_have_value("7")
    assert page.locator("#txt2img_width input[type=range]").get_attribute("max") == "1024"
    expect(page.locator("#txt2img_sampling input")).to_have_value("DPM++ 2M")
    stored = json.loads(path.read_text())
    assert stored["txt2img/Sampling steps/value"] == 7  # kept, and every other control written back beside it
    assert stored["txt2img/CFG Scale/value"] == 7.0 and stored["img2img/Sampling steps/maximum"] == 150

    # Settings > Defaults: view what differs from the file, then write it
    set_slider(page, "txt2img_steps", 9)
    page.locator("#tabs").get_by_role("tab", name="Settings", exact=True).click()
    page.locator("#settings_ui_defaults").get_by_text("Defaults").first.click()
    page.click("#ui_defaults_view")
    review = page.locator("#ui_defaults_review")
    expect(review).to_contain_text("txt2img/Sampling steps/value")
    assert "txt2img/CFG Scale" not in review.inner_text()
    page.click("#ui_defaults_apply")
    expect(review).to_contain_text("Wrote 2 changes.")  # and the sampler the file named wrongly, as A1111
    stored = json.loads(path.read_text())
    assert stored["txt2img/Sampling steps/value"] == 9 and stored["txt2img/Sampling method/value"] == "DPM++ 2M"
    assert not page.errors, page.errors


# -- 6. emoji ------------------------------------------------------------------------------------------------------


def test_emoji_buttons_render_in_colour(page):
    """The tool buttons' emoji (🔄 📋 🖌️ ...) are drawn by a colour emoji font (Debian's fonts-noto-color-emoji,
    installed by run-tests.sh), not as the grey boxes Chromium draws without one: the button's pixels hold colour."""
    import io

    import numpy as np
    from PIL import Image

    for elem_id in ("refresh_sd_model_checkpoint", "txt2img_styles_edit_button", "txt2img_paste"):
        shot = Image.open(io.BytesIO(page.locator(f"#{elem_id}").screenshot())).convert("RGB")
        rgb = np.asarray(shot).astype(int)
        saturation = rgb.max(axis=2) - rgb.min(axis=2)
        assert (saturation > 40).sum() > 20, f"#{elem_id}: no coloured pixels, the emoji font is missing"
    screenshot(page, "txt2img_emoji")
