"""The web UI in a real browser (issue 8 item 8): headless Chromium clicks through the tabs of the real app, which runs
the tiny SD1 checkpoint on the shared queue.

Each test reads what a user would see (gallery, infotext, field values, messages) and, where it matters, the files
the server wrote. Screenshots land in tests/ui/screenshots.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.ui.conftest import VIEWPORT, screenshot

pytestmark = pytest.mark.browser


# -- helpers ---------------------------------------------------------------------------------------------------------


def set_number(page, elem_id: str, value) -> None:
    """Type into the number box of a slider or number field and commit it."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")
    expect(box).to_have_value(str(value))


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.locator(f"#{elem_id} li[role=option][aria-label='{option}']").click()
    expect(page.locator(f"#{elem_id} input").first).to_have_value(option)


def open_tab(page, name: str) -> None:
    page.locator("#tabs").get_by_role("tab", name=name, exact=True).click()


def small_job(page, tab: str, *, steps: int = 3, seed: int | None = None) -> None:
    set_number(page, f"{tab}_width", 64)
    set_number(page, f"{tab}_height", 64)
    set_number(page, f"{tab}_steps", steps)
    if seed is not None:
        page.fill(f"#{tab}_seed input", str(seed))


def generate_and_wait(page, tab: str, expected: str) -> str:
    """Click Generate; wait until the infotext under the gallery shows ``expected`` and the button is back."""
    page.click(f"#{tab}_generate")
    info = page.locator(f"#html_info_{tab}")
    expect(info).to_contain_text(expected, timeout=90_000)
    expect(page.locator(f"#{tab}_generate")).to_be_visible()
    expect(page.locator(f"#{tab}_gallery img").first).to_be_visible()
    return info.inner_text()


def newest_png(folder: Path) -> Path:
    files = sorted(folder.rglob("*.png"), key=lambda p: p.stat().st_mtime)
    assert files, f"no PNG saved under {folder}"
    return files[-1]


# -- txt2img ---------------------------------------------------------------------------------------------------------


def test_txt2img_generates_image_with_infotext(page, ui_server):
    _, _, data = ui_server
    page.fill("#txt2img_prompt textarea", "a red cat")
    expect(page.locator("#txt2img_token_counter")).to_have_text("3/75")
    small_job(page, "txt2img", steps=3, seed=1234)
    choose(page, "txt2img_sampling", "Euler a")
    text = generate_and_wait(page, "txt2img", "Seed: 1234")
    assert text.startswith("a red cat")
    assert "Steps: 3, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 1234, Size: 64x64" in text
    assert "Model: tiny-sd15" in text
    # the image shown is the one saved, with the same infotext in its PNG chunk
    saved = newest_png(data / "outputs" / "txt2img-images")
    with Image.open(saved) as im:
        assert im.size == (64, 64)
        assert "Seed: 1234" in im.info["parameters"] and im.info["parameters"].startswith("a red cat")
    screenshot(page, "txt2img")

    # change sampler, schedule, steps and seed: all four show in the new infotext
    choose(page, "txt2img_sampling", "DPM++ 2M")
    choose(page, "txt2img_scheduler", "Exponential")
    small_job(page, "txt2img", steps=4, seed=777)
    text = generate_and_wait(page, "txt2img", "Seed: 777")
    assert "Steps: 4, Sampler: DPM++ 2M, Schedule type: Exponential" in text

    # ♻️ puts the last seed back after 🎲 cleared it
    page.click("#txt2img_random_seed")
    expect(page.locator("#txt2img_seed input")).to_have_value("-1")
    page.click("#txt2img_reuse_seed")
    expect(page.locator("#txt2img_seed input")).to_have_value("777")
    assert not page.errors, page.errors


def test_paste_infotext_fills_fields(page):
    infotext = ("a dog in the rain\nNegative prompt: blurry\nSteps: 7, Sampler: Heun, Schedule type: Karras, "
                "CFG scale: 5.5, Seed: 4242, Size: 128x96, Model hash: 0123456789, Model: whatever")
    page.fill("#txt2img_prompt textarea", infotext)
    page.click("#txt2img_paste")
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("a dog in the rain")
    expect(page.locator("#txt2img_neg_prompt textarea")).to_have_value("blurry")
    expect(page.locator("#txt2img_steps input[type=number]")).to_have_value("7")
    expect(page.locator("#txt2img_sampling input")).to_have_value("Heun")
    expect(page.locator("#txt2img_scheduler input")).to_have_value("Karras")
    expect(page.locator("#txt2img_cfg_scale input[type=number]")).to_have_value("5.5")
    expect(page.locator("#txt2img_seed input")).to_have_value("4242")
    expect(page.locator("#txt2img_width input[type=number]")).to_have_value("128")
    expect(page.locator("#txt2img_height input[type=number]")).to_have_value("96")


def test_progress_and_interrupt(page):
    """A long job shows the progress bar, turns Generate into Interrupt/Skip, and Interrupt ends it early with what
    was made so far; the next Generate works."""
    page.fill("#txt2img_prompt textarea", "long job")
    small_job(page, "txt2img", steps=20, seed=5)
    set_number(page, "txt2img_batch_count", 30)
    page.click("#txt2img_generate")
    expect(page.locator("#txt2img_interrupt")).to_be_visible()
    expect(page.locator("#txt2img_generate")).to_be_hidden()
    running = page.locator("#txt2img_progress .webui-progress[data-status=running]")
    expect(running).to_be_visible(timeout=60_000)
    expect(running).to_contain_text("%")
    # the live preview (every show_progress_every_n_steps = 10 steps) shows while it runs
    expect(page.locator("#txt2img_live_preview img")).to_be_visible(timeout=60_000)
    screenshot(page, "txt2img_progress")
    started = time.time()
    page.click("#txt2img_interrupt")
    expect(page.locator("#txt2img_generate")).to_be_visible(timeout=60_000)
    assert time.time() - started < 30  # 30 batches of 20 steps would take minutes
    expect(page.locator("#txt2img_progress .webui-progress")).to_have_count(0)
    thumbnails = page.locator("#txt2img_gallery button[aria-label^='Thumbnail']")
    expect(thumbnails.first).to_be_visible()
    assert 1 <= thumbnails.count() < 30
    set_number(page, "txt2img_batch_count", 1)
    page.fill("#txt2img_seed input", "6")
    generate_and_wait(page, "txt2img", "Seed: 6")


# -- img2img ---------------------------------------------------------------------------------------------------------


def test_send_to_img2img_and_generate(page):
    page.fill("#txt2img_prompt textarea", "send me over")
    small_job(page, "txt2img", steps=3, seed=31)
    generate_and_wait(page, "txt2img", "Seed: 31")
    page.click("#txt2img_send_to_img2img")
    expect(page.locator("#img2img_prompt textarea")).to_have_value("send me over")
    expect(page.locator("#img2img_image img").first).to_be_visible()
    expect(page.locator("#img2img_seed input")).to_have_value("31")
    expect(page.locator("#img2img_width input[type=number]")).to_have_value("64")
    set_number(page, "img2img_steps", 4)
    set_number(page, "img2img_denoising_strength", 0.5)
    text = generate_and_wait(page, "img2img", "Denoising strength: 0.5")
    assert text.startswith("send me over")
    assert "Size: 64x64" in text and "Seed: 31" in text
    screenshot(page, "img2img")
    # the img2img result goes on to Inpaint: the sub-tab opens with the image in the mask editor
    page.click("#img2img_send_to_inpaint")
    expect(page.locator("#img2maskimg canvas").first).to_be_visible()
    expect(page.locator("#img2maskimg")).not_to_contain_text("Upload an image")
    expect(page.locator("#img2img_prompt textarea")).to_have_value("send me over")


def test_inpaint_mask_drawn_with_the_mouse(page, ui_server, tmp_path):
    """Draw a stroke across the middle of a flat image in Inpaint: the result keeps the original colour far from the
    stroke (the mask was applied) and changes under it."""
    _, _, data = ui_server
    color = (200, 100, 50)
    source = tmp_path / "flat.png"
    Image.new("RGB", (256, 256), color).save(source)
    open_tab(page, "img2img")
    page.locator("#mode_img2img").get_by_role("tab", name="Inpaint", exact=True).click()
    canvas = page.locator("#img2maskimg canvas").first
    expect(canvas).to_be_visible()  # the editor is set up; an upload before that can be lost
    page.wait_for_timeout(500)
    page.locator("#img2maskimg input[type=file]").set_input_files(str(source))
    # The editor first shows its empty 800x800 canvas (zoom 42%), then the 256 px image zoomed in (over 100%);
    # drawing before that would paint on the empty canvas.
    expect(page.locator("#img2maskimg")).to_contain_text(re.compile(r"(?<!\d)[1-9]\d\d%"), timeout=30_000)
    expect(page.locator("#img2maskimg")).not_to_contain_text("Upload an image")
    page.locator("#img2maskimg button[aria-label=Brush]").click()
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 40, cy)
    page.mouse.down()
    for i in range(9):
        page.mouse.move(cx - 40 + i * 10, cy, steps=3)
    page.mouse.up()
    page.wait_for_timeout(500)
    screenshot(page, "inpaint_mask")
    page.fill("#img2img_prompt textarea", "inpaint the stroke")
    set_number(page, "img2img_width", 64)
    set_number(page, "img2img_height", 64)
    set_number(page, "img2img_steps", 3)
    set_number(page, "img2img_denoising_strength", 1)
    page.fill("#img2img_seed input", "99")
    generate_and_wait(page, "img2img", "Seed: 99")
    result = np.asarray(Image.open(newest_png(data / "outputs" / "img2img-images")).convert("RGB")).astype(int)
    assert result.shape == (64, 64, 3)
    diff = np.abs(result - np.array(color)).sum(axis=2)
    assert diff[:8].max() <= 3 and diff[-8:].max() <= 3, "outside the stroke the original stays"
    assert diff[28:36, 24:40].mean() > 30, "under the stroke the image was repainted"
    screenshot(page, "inpaint_result")


def test_img2img_without_image_shows_a_readable_error(page):
    open_tab(page, "img2img")
    page.click("#img2img_generate")
    expect(page.locator("#html_log_img2img .webui-error")).to_contain_text("no image is selected")
    expect(page.locator("#img2img_generate")).to_be_visible()


# -- PNG Info, Settings, tabs ------------------------------------------------------------------------------------------


def test_png_info_reads_a_saved_png_and_sends_it(page, ui_server, tmp_path):
    text = ("a lighthouse\nNegative prompt: fog\nSteps: 6, Sampler: Euler, Schedule type: Automatic, CFG scale: 4.5, "
            "Seed: 2024, Size: 64x64, Model: tiny-sd15")
    from webui.core.io.images import encode_image

    path = tmp_path / "saved.png"
    path.write_bytes(encode_image(Image.new("RGB", (64, 64), (9, 99, 199)), "png", text))
    open_tab(page, "PNG Info")
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(path))
    html = page.locator("#pnginfo_html")
    expect(html).to_contain_text("parameters")
    expect(html).to_contain_text("Steps: 6, Sampler: Euler")
    screenshot(page, "pnginfo")
    page.click("#pnginfo_send_to_txt2img")
    expect(page.locator("#txt2img_prompt textarea")).to_have_value("a lighthouse")
    expect(page.locator("#txt2img_neg_prompt textarea")).to_have_value("fog")
    expect(page.locator("#txt2img_steps input[type=number]")).to_have_value("6")
    expect(page.locator("#txt2img_seed input")).to_have_value("2024")
    open_tab(page, "PNG Info")
    page.click("#pnginfo_send_to_img2img")
    expect(page.locator("#img2img_prompt textarea")).to_have_value("a lighthouse")
    expect(page.locator("#img2img_image img").first).to_be_visible()


def test_setting_survives_a_reload(page, ui_server):
    _, app, data = ui_server
    open_tab(page, "Settings")
    set_number(page, "setting_jpeg_quality", 91)
    page.click("#settings_submit")
    expect(page.locator("#settings_result")).to_contain_text("jpeg_quality")
    assert json.loads((data / "config.json").read_text())["jpeg_quality"] == 91
    assert app.state.webui.settings.get("jpeg_quality") == 91
    page.reload()
    page.wait_for_selector("#txt2img_prompt textarea")
    open_tab(page, "Settings")
    expect(page.locator("#setting_jpeg_quality input[type=number]")).to_have_value("91")
    screenshot(page, "settings")
    # the section list switches pages; "Show all pages" shows every section
    page.locator("#settings_sections").get_by_label("Infotext").check()
    page.locator("#setting_infotext_styles input").first.click()
    expect(page.locator("#setting_infotext_styles li[role=option]")).to_have_count(4)
    page.keyboard.press("Escape")
    page.locator("#settings_show_all_pages input").check()
    expect(page.locator("#settings_section_sd")).to_be_visible()
    expect(page.locator("#settings_section_training")).to_be_visible()


def test_extras_upscales_the_sent_image(page):
    page.fill("#txt2img_prompt textarea", "to extras")
    small_job(page, "txt2img", steps=2, seed=8)
    generate_and_wait(page, "txt2img", "Seed: 8")
    page.click("#txt2img_send_to_extras")
    expect(page.locator("#extras_image img").first).to_be_visible()
    set_number(page, "extras_upscaling_resize", 2)
    choose(page, "extras_upscaler_1", "Lanczos")
    page.click("#extras_generate")
    info = page.locator("#html_info_extras")
    expect(info).to_contain_text("Postprocess upscaler: Lanczos")
    expect(info).to_contain_text("Postprocess upscale by: 2")
    expect(page.locator("#extras_gallery img").first).to_be_visible()
    screenshot(page, "extras")


def test_checkpoint_switch_persists(page, ui_server):
    """The top bar's checkpoint dropdown loads the model on the worker, stores its title in config.json, and the next
    generation uses it; a reload shows it."""
    _, app, data = ui_server
    state = app.state.webui
    dropdown = page.locator("#setting_sd_model_checkpoint input").first
    expect(dropdown).to_have_value(re.compile(r"^tiny-sd15\.safetensors"))
    dropdown.click()
    page.locator("#setting_sd_model_checkpoint li[role=option][aria-label^='tiny-sd15-b']").click()
    expect(page.locator("#quicksettings_status")).to_be_empty(timeout=60_000)
    deadline = time.time() + 60
    while not str(state.settings.get("sd_model_checkpoint")).startswith("tiny-sd15-b.safetensors ["):
        assert time.time() < deadline, state.settings.get("sd_model_checkpoint")
        time.sleep(0.2)
    stored = json.loads((data / "config.json").read_text())["sd_model_checkpoint"]
    assert re.fullmatch(r"tiny-sd15-b\.safetensors \[[0-9a-f]{10}\]", stored)
    assert state.engine.current_model().info.title == stored
    page.fill("#txt2img_prompt textarea", "other model")
    small_job(page, "txt2img", steps=2, seed=3)
    text = generate_and_wait(page, "txt2img", "Seed: 3")
    assert "Model: tiny-sd15-b," in text
    page.reload()
    page.wait_for_selector("#txt2img_prompt textarea")
    expect(page.locator("#setting_sd_model_checkpoint input").first).to_have_value(stored)
    # back to the first one, for the tests that follow
    page.locator("#setting_sd_model_checkpoint input").first.click()
    page.locator("#setting_sd_model_checkpoint li[role=option][aria-label^='tiny-sd15.safetensors']").click()
    deadline = time.time() + 60
    while not str(state.settings.get("sd_model_checkpoint")).startswith("tiny-sd15.safetensors ["):
        assert time.time() < deadline
        time.sleep(0.2)


def test_every_tab_renders(page):
    for name, shot in (("Extras", "extras_tab"), ("Checkpoint Merger", "modelmerger"), ("Train", "train"),
                       ("img2img", "img2img_tab"), ("txt2img", "txt2img_tab")):
        open_tab(page, name)
        page.wait_for_timeout(300)
        screenshot(page, shot)
    assert not page.errors, page.errors


def test_gradio_auth_login(browser, models_root, tmp_path):
    from tests.api.live_server import data_dir_with, live_server

    data = data_dir_with(tmp_path / "auth-data", models_root, "tiny-sd15.safetensors")
    with live_server(["--data-dir", str(data), "--gradio-auth", "tester:s3cret", "--skip-load-model-at-start"]) \
            as (url, _):
        # the page's config, its files and its queue refuse strangers
        assert httpx.get(url + "/config").status_code == 401
        assert httpx.post(url + "/gradio_api/queue/join", json={}).status_code in (401, 403)
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        try:
            page.goto(url + "/")
            page.get_by_label("username").fill("tester")
            page.get_by_label("password").fill("wrong")
            page.get_by_role("button", name=re.compile("login", re.IGNORECASE)).click()
            expect(page.get_by_text(re.compile("incorrect", re.IGNORECASE))).to_be_visible()
            screenshot(page, "login")
            page.get_by_label("username").fill("tester")  # the form is cleared after a failed login
            page.get_by_label("password").fill("s3cret")
            page.get_by_role("button", name=re.compile("login", re.IGNORECASE)).click()
            expect(page.locator("#txt2img_prompt textarea")).to_be_visible(timeout=60_000)
            cookies = {c["name"]: c["value"] for c in context.cookies()}
            assert httpx.get(url + "/config", cookies=cookies).status_code == 200
        finally:
            context.close()



def test_generate_forever_from_the_context_menu(page, ui_server):
    """Right-click on Generate: "Generate forever" keeps generating until "Cancel generate forever" (A1111's menu)."""
    _, _, data = ui_server
    folder = data / "outputs" / "txt2img-images"

    def count() -> int:
        return len(list(folder.rglob("*.png"))) if folder.exists() else 0

    before = count()
    small_job(page, "txt2img", steps=1, seed=-1)
    page.click("#txt2img_generate", button="right")
    page.locator("#context-menu").get_by_text("Generate forever", exact=True).click()
    deadline = time.time() + 150
    while count() < before + 3 and time.time() < deadline:
        time.sleep(0.5)
    assert count() >= before + 3, "Generate forever made fewer than three images"
    page.click("#txt2img_generate", button="right")
    page.locator("#context-menu").get_by_text("Cancel generate forever", exact=True).click()
    expect(page.locator("#txt2img_generate")).to_be_visible(timeout=90_000)
    time.sleep(0.5)
    settled = count()
    time.sleep(3)
    assert count() == settled, "generation went on after Cancel generate forever"
    assert not page.errors, page.errors


def test_script_dropdown_runs_xyz_plot(page, ui_server):
    """The Script dropdown shows X/Y/Z plot's controls; Generate runs it and the grid comes first."""
    _, app, data = ui_server
    runner = app.state.webui.scripts_txt2img
    xyz = runner.find("X/Y/Z plot")
    values_id = f"{xyz.elem_id('')}{xyz.args_from + 1}"  # "X values" (X type defaults to Seed)
    small_job(page, "txt2img", steps=1, seed=11)
    choose(page, "txt2img_script", "X/Y/Z plot")
    box = page.locator(f"#{values_id} textarea, #{values_id} input").first
    expect(box).to_be_visible()
    box.fill("11,12")
    generate_and_wait(page, "txt2img", "Seed: 11")
    # the grid is saved as A1111 names it, with the script's infotext (X type Seed, two cells of 64 x 64)
    grid = newest_png(data / "outputs" / "txt2img-grids")
    with Image.open(grid) as im:
        assert grid.name.startswith("xyz_grid-") and im.size[0] >= 128
        assert "Script: X/Y/Z plot, X Type: Seed, X Values: \"11,12\"" in im.info["parameters"]
    choose(page, "txt2img_script", "None")
    expect(box).to_be_hidden()
    assert not page.errors, page.errors
