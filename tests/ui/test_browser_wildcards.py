"""Dynamic Prompts' Wildcards Manager tab in the page (extensions-builtin/sd-dynamic-prompts, sddp_wildcards/tab.py):
the tree lists the wildcards folder's wildcards by name, a click loads one into the editor, Save writes it, the next
txt2img whose prompt names it draws from the edited file, and Delete asks before it deletes."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.ui.conftest import VIEWPORT, screenshot
from tests.ui.test_browser import open_tab

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def wildcards_server(models_root, tmp_path_factory):
    from tests.api.live_server import data_dir_with, live_server

    data = data_dir_with(tmp_path_factory.mktemp("wildcards-ui-data"), models_root, "tiny-sd15.safetensors")
    folder = data / "my-wildcards"
    (folder / "animals").mkdir(parents=True)
    (folder / "animals" / "pets.txt").write_text("cat\ndog\n")
    (folder / "styles.yaml").write_text("colors:\n  warm: [red, orange]\n")
    (data / "config.json").write_text(json.dumps({"sd_model_checkpoint": "tiny-sd15.safetensors",
                                                  "wildcard_dir": str(folder)}))
    with live_server(["--api", "--data-dir", str(data)]) as (url, _app):
        yield url, folder


@pytest.fixture
def wc_page(browser, wildcards_server):
    context = browser.new_context(viewport=VIEWPORT)
    p = context.new_page()
    p.set_default_timeout(60_000)
    p.errors = []
    p.on("pageerror", lambda e: p.errors.append(str(e)))
    p.goto(wildcards_server[0] + "/")
    p.wait_for_selector("#txt2img_prompt textarea")
    try:
        yield p
    finally:
        context.close()


def _txt2img_prompts(page, url: str, prompt: str, seed: int) -> list[str]:
    r = page.request.post(url + "/sdapi/v1/txt2img", data={
        "prompt": prompt, "steps": 1, "width": 64, "height": 64, "seed": seed, "sampler_name": "Euler",
        "n_iter": 2, "batch_size": 1, "save_images": False})
    assert r.ok, r.text()
    return json.loads(r.json()["info"])["all_prompts"]


def test_edit_a_wildcard_in_the_tab_and_generate_with_it(wc_page, wildcards_server):
    page, (url, folder) = wc_page, wildcards_server
    open_tab(page, "Wildcards Manager")
    tree = page.locator("#sddp-wildcard-tree")
    expect(tree).to_contain_text("2 wildcards in")
    expect(tree.locator(".sddp-wildcard[data-name='colors/warm']")).to_be_visible()

    # the search narrows the tree to the names that contain it
    page.fill("#sddp-wildcard-search textarea, #sddp-wildcard-search input", "pet")
    expect(tree).to_contain_text("1 of 2 wildcards")
    expect(tree.locator(".sddp-wildcard[data-name='colors/warm']")).to_have_count(0)

    # a click loads the wildcard: its __name__, its file, its lines
    tree.locator(".sddp-wildcard[data-name='animals/pets']").click()
    expect(page.locator("#sddp-wildcard-file-name input, #sddp-wildcard-file-name textarea")) \
        .to_have_value("__animals/pets__")
    expect(page.locator("#sddp-wildcard-file-path textarea, #sddp-wildcard-file-path input")) \
        .to_have_value("animals/pets.txt")
    editor = page.locator("#sddp-wildcard-file-editor textarea")
    expect(editor).to_have_value("cat\ndog\n")

    # edit and save: the file changes on disk, the status names the wildcard
    editor.fill("zebra\nlion\n")
    page.locator("#sddp-wildcard-save-button").click()
    expect(page.locator("#sddp-wildcard-status")).to_contain_text("Saved animals/pets.txt")
    assert (folder / "animals" / "pets.txt").read_text() == "zebra\nlion\n"
    screenshot(page, "wildcards-manager")

    # the next txt2img uses the edited file: every prompt draws from it, and the same seed draws the same
    prompts = _txt2img_prompts(page, url, "a __animals/pets__", seed=11)
    assert len(prompts) == 2 and all(p in ("a zebra", "a lion") for p in prompts)
    assert _txt2img_prompts(page, url, "a __animals/pets__", seed=11) == prompts
    many = {p for s in range(6) for p in _txt2img_prompts(page, url, "__animals/pets__", seed=100 + 2 * s)}
    assert many == {"zebra", "lion"}

    # a refused path says why and writes nothing
    page.fill("#sddp-wildcard-file-path textarea, #sddp-wildcard-file-path input", "../escape.txt")
    page.locator("#sddp-wildcard-save-button").click()
    expect(page.locator("#sddp-wildcard-status")).to_contain_text("names with '..'")
    assert not (folder.parent / "escape.txt").exists()

    # Delete asks first: dismissed, nothing goes; accepted, the file goes and leaves the tree
    page.fill("#sddp-wildcard-file-path textarea, #sddp-wildcard-file-path input", "animals/pets.txt")
    page.once("dialog", lambda d: d.dismiss())
    page.locator("#sddp-wildcard-delete-button").click()
    expect(page.locator("#sddp-wildcard-status")).to_contain_text("Not deleted")
    assert (folder / "animals" / "pets.txt").exists()
    page.once("dialog", lambda d: d.accept())
    page.locator("#sddp-wildcard-delete-button").click()
    expect(page.locator("#sddp-wildcard-status")).to_contain_text("Deleted animals/pets.txt")
    assert not (folder / "animals").exists()
    expect(tree).to_contain_text("No wildcard name contains")

    # a file added behind the page's back shows when the tab is opened again
    page.fill("#sddp-wildcard-search textarea, #sddp-wildcard-search input", "")
    expect(tree).to_contain_text("1 wildcard in")
    (folder / "added.txt").write_text("x\n")
    expect(tree.locator(".sddp-wildcard[data-name='added']")).to_have_count(0)
    open_tab(page, "txt2img")
    open_tab(page, "Wildcards Manager")
    expect(tree.locator(".sddp-wildcard[data-name='added']")).to_be_visible()

    # no collections are bundled: the collection actions say so
    page.get_by_text("Collection actions").click()
    expect(page.locator("#sddp-wildcard-collections-note")).to_contain_text("No collections are bundled")
    assert page.errors == []
