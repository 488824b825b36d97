"""The Extensions tab and the built-in Dynamic Prompts extension in a real browser (issue 15 items 3-4): the
Installed table lists the installed extension (a clone of a local bare repository) and the built-in one, Install
from URL clones another one and lists it, and the Dynamic Prompts accordion switches the prompt expansion that the
generated infotext shows."""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
from contextlib import contextmanager

import pytest
from playwright.sync_api import expect

from tests.fixtures.git_extensions import git, make_bare_extension
from tests.ui.conftest import VIEWPORT, screenshot
from tests.ui.test_browser import choose, generate_and_wait, open_tab, small_job

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def ext_server(models_root, tmp_path_factory):
    from tests.api.live_server import data_dir_with, live_server

    root = tmp_path_factory.mktemp("ext-ui")
    data = data_dir_with(root / "data", models_root, "tiny-sd15.safetensors")
    (data / "config.json").write_text('{"sd_model_checkpoint": "tiny-sd15.safetensors"}')
    installed, _ = make_bare_extension(root / "remotes", "sd-webui-installed")
    git(root, "clone", str(installed), str(data / "extensions" / "sd-webui-installed"))
    second, _ = make_bare_extension(root / "remotes", "sd-webui-second")
    third, _ = make_bare_extension(root / "remotes", "sd-webui-third")
    index = {"tags": {"script": "a script"}, "extensions": [
        {"name": "Third one", "url": str(third), "description": "from the index", "tags": ["script"],
         "added": "2024-01-01"},
        {"name": "Already here", "url": str(installed), "description": "installed", "tags": [], "added": "2023-01-01"},
    ]}
    with _serve_json(index) as index_url, live_server(["--api", "--data-dir", str(data)]) as (url, app):
        yield url, app, data, second, index_url


@contextmanager
def _serve_json(document):
    """A loopback HTTP server answering GET /index.json with ``document`` (A1111's extension index shape)."""
    body = json.dumps(document).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/index.json" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if self.path == "/index.json" else b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.json"
    finally:
        server.shutdown()


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


def test_installed_table_and_install_from_url(ext_page, ext_server):
    page = ext_page
    _, _, data, second, index_url = ext_server
    open_tab(page, "Extensions")
    table = page.locator("#extensions_installed_html")
    expect(table).to_contain_text("sd-webui-installed")
    row = table.locator("tr[data-extension='sd-webui-installed']")
    commit = git(data / "extensions" / "sd-webui-installed", "rev-parse", "HEAD")
    expect(row).to_contain_text("main")
    expect(row).to_contain_text(commit[:8])
    expect(table.locator("tr[data-extension='sd-dynamic-prompts']")).to_contain_text("built-in")
    enabled = page.locator("#extensions_enabled")
    expect(enabled.get_by_label("sd-webui-installed")).to_be_checked()
    expect(enabled.get_by_label("sd-dynamic-prompts")).to_be_checked()
    screenshot(page, "extensions_installed")

    page.locator("#tabs_extensions").get_by_role("tab", name="Install from URL").click()
    page.fill("#extensions_install_url textarea, #extensions_install_url input", str(second))
    page.click("#extensions_install_button")
    expect(page.locator("#extension_install_result")).to_contain_text(
        re.compile(r"Installed into .*sd-webui-second\. Use Installed tab to restart\."), timeout=60_000)
    assert (data / "extensions" / "sd-webui-second" / "README.md").exists()
    page.locator("#tabs_extensions").get_by_role("tab", name="Installed").click()
    expect(table).to_contain_text("sd-webui-second")

    # Available: the index from a URL (installed ones hidden by default), one installed from the list; offline said
    page.locator("#tabs_extensions").get_by_role("tab", name="Available").click()
    url_box = page.locator("#extensions_index_url textarea, #extensions_index_url input").first
    expect(url_box).to_have_value("https://raw.githubusercontent.com/AUTOMATIC1111/stable-diffusion-webui-extensions/"
                                  "master/index.json")
    url_box.fill(index_url)
    url_box.blur()
    expect(url_box).to_have_value(index_url)
    page.click("#extensions_load_index")
    available = page.locator("#extensions_available_html")
    expect(page.locator("#extensions_available_result")).not_to_contain_text("Could not load")
    expect(available).to_contain_text("Third one", timeout=60_000)
    expect(available).to_contain_text("Extension hidden: 1")
    choose(page, "extensions_index_choice", "Third one")
    page.click("#extensions_index_install")
    expect(page.locator("#extensions_available_result")).to_contain_text("Installed into")
    assert (data / "extensions" / "sd-webui-third" / "README.md").exists()
    expect(available).to_contain_text("Extension hidden: 2")  # now installed, so hidden
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    url_box.fill(f"http://127.0.0.1:{closed}/index.json")
    page.click("#extensions_load_index")
    expect(page.locator("#extensions_available_result")).to_contain_text("Could not load the extension index")

    # Backup/Restore: save the state under a name, see it, restore it (confirmed in the browser's dialog)
    page.locator("#tabs_extensions").get_by_role("tab", name="Backup/Restore").click()
    page.fill("#extension_backup_name textarea, #extension_backup_name input", "ui set")
    page.click("#extension_backup_save")
    expect(page.locator("#extension_backup_info")).to_contain_text("Saved current webui/extension state to")
    expect(page.locator("#extension_backup_table")).to_contain_text("Config Backup: ui set")
    expect(page.locator("#extension_backup_table")).to_contain_text("sd-webui-second")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#extension_backup_restore")
    expect(page.locator("#extension_backup_info")).to_contain_text("Restored.")
    assert (data / "config_states").is_dir() and len(list((data / "config_states").glob("*_ui set.json"))) == 1
    assert not page.errors, page.errors


def test_dynamic_prompts_accordion_changes_the_infotext(ext_page, ext_server):
    page = ext_page
    _, app = ext_server[:2]
    runner = app.state.webui.scripts_txt2img
    script = runner.find("Dynamic Prompts v2.17.1")
    small_job(page, "txt2img", steps=1, seed=3)
    page.fill("#txt2img_prompt textarea", "a {red|blue} cat")
    text = generate_and_wait(page, "txt2img", "Steps: 1")
    assert re.match(r"a (red|blue) cat\n", text), text  # expanded: Dynamic Prompts is on by default

    accordion = page.locator(f"#{script.elem_id('accordion')}")
    expect(accordion).to_contain_text("Dynamic Prompts")
    accordion.get_by_text("Dynamic Prompts", exact=True).first.click()
    checkbox = page.locator(f"#{script.elem_id('')}{script.args_from} input[type=checkbox]")
    expect(checkbox).to_be_checked()
    checkbox.uncheck()
    page.fill("#txt2img_seed input", "4")
    text = generate_and_wait(page, "txt2img", "Seed: 4")
    assert text.startswith("a {red|blue} cat\n"), text  # off: the template goes to the model as written
    screenshot(page, "dynamic_prompts_accordion")
    assert not page.errors, page.errors
