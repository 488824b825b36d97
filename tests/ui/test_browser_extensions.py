"""A1111 extensions in the page (issue 15): the fixture extensions of tests/plugins/extension_fixtures.py loaded by
the real app -- the extension's tab is there, its option is on the Settings page under its section, its javascript
and style.css are in the page, and its always-on script's controls change what Generate makes. An extension's ui()
runs inside the page (as in A1111): the events it wires between its own components work there."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.plugins.extension_fixtures import write_extensions, write_page_events
from tests.ui.conftest import VIEWPORT, screenshot
from tests.ui.test_browser import choose, generate_and_wait, open_tab, small_job

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def ext_server(models_root, tmp_path_factory):
    from tests.api.live_server import data_dir_with, live_server

    data = data_dir_with(tmp_path_factory.mktemp("ext-ui-data"), models_root, "tiny-sd15.safetensors")
    (data / "config.json").write_text('{"sd_model_checkpoint": "tiny-sd15.safetensors"}')
    write_extensions(data)
    write_page_events(data)
    with live_server(["--api", "--data-dir", str(data), "--seed-prompt-word", "SEEDWORD"]) as (url, app):
        yield url, app, data


@pytest.fixture
def ext_page(browser, ext_server):
    context = browser.new_context(viewport=VIEWPORT)
    p = context.new_page()
    p.set_default_timeout(60_000)
    p.errors = []
    p.on("pageerror", lambda e: p.errors.append(str(e)))
    p.goto(ext_server[0] + "/")
    p.wait_for_selector("#txt2img_prompt textarea")
    try:
        yield p
    finally:
        context.close()


def test_extension_tab_script_option_and_assets_in_the_page(ext_page, ext_server):
    page = ext_page
    # javascript/*.js ran in the page; style.css is in the page's styles
    assert page.evaluate("window.seedPromptLoaded") is True
    assert "#seed_prompt_marker" in page.content()
    # on_app_started with the page: the route sees the gradio Blocks
    assert page.request.get(ext_server[0] + "/routes-and-tab/hello").json() == {"hello": "world", "with_ui": True}

    # the on_ui_tabs tab
    open_tab(page, "Extension tab")
    expect(page.locator("#routes_and_tab_text")).to_contain_text("Hello from an extension tab")

    # the always-on script's controls change the generation: prompt rewritten from the seed, its infotext entry
    open_tab(page, "txt2img")
    page.fill("#txt2img_prompt textarea", "a cat")
    small_job(page, "txt2img", steps=2, seed=4242)
    # the extension's ui() made its own accordion: the page puts it in a plain group (A1111), not in another one
    group = page.locator("#script_txt2img_seed_prompt_group")
    group.get_by_role("button", name="Seed prompt").click()
    group.get_by_label("Append the seed").check()
    text = generate_and_wait(page, "txt2img", "Seed prompt: M")
    assert text.startswith("a cat, SEEDWORD 4242 tail")
    screenshot(page, "extension-seed-prompt")

    # the option the extension added is on the Settings page under its own section
    open_tab(page, "Settings")
    page.locator("#settings_sections").get_by_label("Seed prompt").check()
    expect(page.locator("#setting_seed_prompt_suffix textarea")).to_have_value("tail")
    assert page.errors == []


def test_extension_ui_events_work_in_the_page(ext_page):
    """The always-on script's ui() (tests/plugins/extension_fixtures.py PAGE_EVENTS): its InputAccordion switches it
    on when opened and off when closed, its checkbox shows its slider, its button fills its textbox, and Generate
    gives its process() the values the page had (in the infotext). The selectable variant does the same from the
    Script dropdown."""
    page = ext_page
    small_job(page, "txt2img", steps=1, seed=7)
    page.fill("#txt2img_prompt textarea", "a dog")
    # its InputAccordion: opening it switches the script on (the accordion's value)
    accordion = page.locator("#script_txt2img_page_events_enabled")
    accordion.get_by_role("button", name="Page events").click()
    slider = page.locator("#page_events_txt2img_strength")
    expect(page.locator("#page_events_txt2img_show")).to_be_visible()
    expect(slider).to_be_hidden()
    page.locator("#page_events_txt2img_show").get_by_label("page_events_txt2img show strength").check()
    expect(slider).to_be_visible()
    slider.locator("input[type=number]").fill("7")
    slider.locator("input[type=number]").press("Enter")
    page.locator("#page_events_txt2img_fill").click()
    expect(page.locator("#page_events_txt2img_text textarea")).to_have_value("filled")
    text = generate_and_wait(page, "txt2img", "Page events: True/7/filled")
    assert "Page events script" not in text
    # unticked again: the slider hides; the accordion closed: the script is off again
    page.locator("#page_events_txt2img_show").get_by_label("page_events_txt2img show strength").uncheck()
    expect(slider).to_be_hidden()
    accordion.get_by_role("button", name="Page events").click()
    expect(page.locator("#page_events_txt2img_text")).to_be_hidden()

    # the selectable script: its group shows when chosen; its ui()'s events work there too
    choose(page, "txt2img_script", "Page events script")
    expect(page.locator("#page_script_show")).to_be_visible()
    expect(page.locator("#page_script_strength")).to_be_hidden()
    page.locator("#page_script_show").get_by_label("page_script show strength").check()
    expect(page.locator("#page_script_strength")).to_be_visible()
    page.locator("#page_script_fill").click()
    expect(page.locator("#page_script_text textarea")).to_have_value("filled")
    text = generate_and_wait(page, "txt2img", "Page events script: True/3/filled")
    assert "Page events: " not in text
    screenshot(page, "extension-page-events")
    assert page.errors == []
