"""The Extensions tab's work and GET /sdapi/v1/extensions (issue 15 item 3), against git repositories the tests make:
A1111's shape, install from a local bare repository, the refusal under --listen, enable/disable persisted in
config.json, check for updates (reachable and unreachable remote), updating on apply, Backup/Restore in A1111's
config-state format, and the Available list from a local HTTP server (and a clear message when it cannot be
reached)."""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.git_extensions import git, make_bare_extension, push_commit
from webui.app import build_app
from webui.config import parse
from webui.core.extension_manager import actions, config_states, index as ext_index
from webui.core.extension_manager.install import ACCESS_DISABLED, ExtensionAccessDenied, InstallError

pytest.importorskip("gradio")
from webui.ui.tabs import extensions as tab  # noqa: E402  (the tab's handlers: what its buttons call)


@pytest.fixture
def remote(tmp_path):
    """(bare repository = the install URL, its work tree for new commits)."""
    return make_bare_extension(tmp_path / "remotes")


@pytest.fixture
def make_app(models_root):
    """build_app over a fresh data dir (under the given folder) whose models are the session's tiny checkpoints."""
    root, _ = models_root

    def make(tmp_path, *flags):
        data = tmp_path / "data"
        (data / "models").mkdir(parents=True, exist_ok=True)
        if not (data / "models" / "Stable-diffusion").exists():
            (data / "models" / "Stable-diffusion").symlink_to(root / "models" / "Stable-diffusion",
                                                               target_is_directory=True)
        return _build(data, *flags)

    return make


def _build(data, *flags):
    config = parse(["--nowebui", "--data-dir", str(data), "--skip-load-model-at-start", *flags])
    return build_app(config)


def _config_json(app) -> dict:
    with open(app.state.webui.config.ui_settings_file, encoding="utf-8") as f:
        return json.load(f)


def test_install_from_a_local_bare_repository_and_the_api_shape(make_app, tmp_path, remote):
    bare, work = remote
    app = make_app(tmp_path)
    state = app.state.webui
    (tmp_path / "data" / "extensions" / "not-a-clone").mkdir(parents=True)  # a plain folder: not reported (A1111)
    target = tab.install_extension(state, str(bare))
    assert target == str(tmp_path / "data" / "extensions" / "sd-webui-fixture")
    assert (tmp_path / "data" / "extensions" / "sd-webui-fixture" / "README.md").read_text() == "# sd-webui-fixture\n"
    assert not (tmp_path / "data" / "tmp" / "sd-webui-fixture").exists()  # cloned into tmp/, then moved

    with TestClient(app) as client:
        items = client.get("/sdapi/v1/extensions").json()
    commit = git(work, "rev-parse", "HEAD")
    date = git(work, "log", "-1", "--format=%ct")
    # A1111 get_extensions_list: extensions with a remote only (built-ins and plain folders are left out)
    assert items == [{"name": "sd-webui-fixture", "remote": str(bare), "branch": "main", "commit_hash": commit,
                      "version": commit[:8], "commit_date": date, "enabled": True}]

    # A1111's refusals, with its messages
    with pytest.raises(InstallError, match="Extension directory already exists"):
        tab.install_extension(state, str(bare))
    with pytest.raises(InstallError, match="Extension with this URL is already installed"):
        tab.install_extension(state, str(bare), dirname="other-name")
    with pytest.raises(InstallError, match="No URL specified"):
        tab.install_extension(state, "  ")
    with pytest.raises(InstallError, match="plain folder name"):
        tab.install_extension(state, str(bare), dirname="../escape")
    with pytest.raises(InstallError, match=r"Could not clone .*fatal:"):
        tab.install_extension(state, str(tmp_path / "no-such-repo.git"))
    assert sorted(p.name for p in (tmp_path / "data" / "extensions").iterdir()) == ["not-a-clone", "sd-webui-fixture"]

    # a branch and a folder name of one's choice
    git(work, "checkout", "-b", "dev")
    dev_commit = push_commit(work, "dev work")
    git(work, "push", "origin", "dev")
    other = tab.install_extension(state, str(bare) + "/", dirname="fixture-dev", branch="dev")
    assert git(other, "rev-parse", "HEAD") == dev_commit
    assert git(other, "symbolic-ref", "--short", "HEAD") == "dev"


def test_install_is_refused_under_listen_without_insecure_extension_access(make_app, tmp_path, remote):
    bare, _ = remote
    state = make_app(tmp_path, "--listen").state.webui
    with pytest.raises(ExtensionAccessDenied, match=re.escape(ACCESS_DISABLED)):
        tab.install_extension(state, str(bare))
    assert not (tmp_path / "data" / "extensions" / "sd-webui-fixture").exists()
    # the other actions that change extensions are refused too (A1111 check_access)
    assert ACCESS_DISABLED in tab.apply_and_restart(state, [], [], "none")
    assert state.server.command is None
    with pytest.raises(ExtensionAccessDenied):
        actions.check_updates([], [], state.config.extension_access_disabled)

    allowed = make_app(tmp_path / "allowed", "--listen", "--enable-insecure-extension-access").state.webui
    assert tab.install_extension(allowed, str(bare)).endswith("sd-webui-fixture")


def test_enable_disable_is_persisted_and_reported(make_app, tmp_path, remote):
    bare, _ = remote
    app = make_app(tmp_path)
    state = app.state.webui
    tab.install_extension(state, str(bare))
    names = [e.name for e in tab.current_extensions(state)]
    assert "sd-webui-fixture" in names
    kept = [n for n in names if n != "sd-webui-fixture"]
    message = tab.apply_and_restart(state, kept, [], "none")
    # saved, then A1111's "Apply and quit" (this process was not started by launch.py, so it cannot restart itself)
    assert state.server.command == "stop" and "stopping" in message
    stored = _config_json(app)
    assert stored["disabled_extensions"] == ["sd-webui-fixture"] and stored["disable_all_extensions"] == "none"
    with TestClient(app) as client:
        items = {i["name"]: i for i in client.get("/sdapi/v1/extensions").json()}
        assert items["sd-webui-fixture"]["enabled"] is False
        assert client.get("/sdapi/v1/options").json()["disabled_extensions"] == ["sd-webui-fixture"]

    # enabled again, and this time the process can restart itself (launch.py sets restartable)
    state.server.command = None
    state.server.event.clear()
    state.server.restartable = True
    tab.apply_and_restart(state, names, [], "extra")
    assert state.server.command == "restart"
    assert _config_json(app)["disabled_extensions"] == [] and _config_json(app)["disable_all_extensions"] == "extra"
    assert "unknown extension" in tab.apply_and_restart(state, ["nope"], [], "none")


def test_check_for_updates_and_update_on_apply(make_app, tmp_path, remote):
    bare, work = remote
    state = make_app(tmp_path).state.webui
    target = tab.install_extension(state, str(bare))
    names = [e.name for e in tab.current_extensions(state)]
    _, _, info = tab.check_for_updates(state, names)
    assert "up to date" in info
    new_commit = push_commit(work, "second")
    table, update, info = tab.check_for_updates(state, names)
    assert update["value"] == ["sd-webui-fixture"] and "new commits" in table

    tab.apply_and_restart(state, names, ["sd-webui-fixture"], "none")
    assert git(target, "rev-parse", "HEAD") == new_commit
    # A1111 backs the state up before updating
    saved = config_states.list_config_states(config_states.config_states_dir(state.config.data_dir))
    assert [s["name"] for s in saved.values()] == ["Backup (pre-update)"]

    # a remote that cannot be reached: said clearly, nothing marked for update
    git(target, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    ext = next(e for e in tab.current_extensions(state) if e.name == "sd-webui-fixture")
    ext.have_info_from_repo = False
    table, update, info = tab.check_for_updates(state, names)
    assert "sd-webui-fixture: could not check for updates (fatal:" in info
    assert update["value"] == [] and "unknown (remote error)" in table


def test_backup_and_restore_of_the_enabled_set_and_commits(make_app, tmp_path, remote):
    bare, work = remote
    app = make_app(tmp_path)
    state = app.state.webui
    target = tab.install_extension(state, str(bare))
    first_commit = git(target, "rev-parse", "HEAD")
    names = [e.name for e in tab.current_extensions(state)]
    choices_update, message = tab.save_config_state(state, "my set")
    path = re.search(r'to "(.*)"', message).group(1)
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    # A1111 1.10's config-state shape
    assert set(saved) == {"created_at", "webui", "extensions", "name"} and saved["name"] == "my set"
    assert set(saved["webui"]) == {"remote", "commit_hash", "commit_date", "branch"}
    entry = saved["extensions"]["sd-webui-fixture"]
    assert entry == {"name": "sd-webui-fixture", "path": target, "enabled": True, "is_builtin": False,
                     "remote": str(bare), "commit_hash": first_commit,
                     "commit_date": int(git(work, "log", "-1", "--format=%ct")), "branch": "main",
                     "have_info_from_repo": True}
    label = choices_update["value"]
    assert label.startswith("my set: ") and label in tab.config_state_choices(state)
    assert "Config Backup: my set" in tab.config_state_table(state, label)

    # later: disabled, and updated to a newer commit
    push_commit(work, "newer")
    tab.apply_and_restart(state, [n for n in names if n != "sd-webui-fixture"], ["sd-webui-fixture"], "none")
    assert _config_json(app)["disabled_extensions"] == ["sd-webui-fixture"]
    assert git(target, "rev-parse", "HEAD") != first_commit

    # restore: the saved commit and the saved enabled set, then a restart (or stop)
    state.server.command = None
    report = tab.restore_config_state(state, label, "extensions")
    assert f"sd-webui-fixture: " in report and first_commit[:8] in report
    assert git(target, "rev-parse", "HEAD") == first_commit
    assert _config_json(app)["disabled_extensions"] == []
    assert state.server.command == "stop"
    # restoring the web UI's own checkout is refused (it would reset this server's code)
    assert "not supported" in tab.restore_config_state(state, label, "webui")
    assert tab.restore_config_state(state, "Current", "extensions") == "<span>Select a config to restore from.</span>"
    assert tab.restore_config_state(state, "", "extensions") == "<span>Cancelled.</span>"  # the confirm was declined


INDEX = {
    "tags": {"script": "a script", "ads": "advertising"},
    "extensions": [
        {"name": "Alpha", "url": "https://github.com/someone/sd-webui-alpha", "description": "first",
         "tags": ["script"], "added": "2023-01-01", "stars": 5},
        {"name": "Beta", "url": "https://github.com/someone/sd-webui-beta.git", "description": "has ads",
         "tags": ["ads"], "added": "2023-06-01", "stars": 50},
        {"name": "Fixture", "url": "https://example.invalid/sd-webui-fixture", "description": "installed one",
         "tags": [], "added": "2022-01-01"},
    ],
}


@pytest.fixture
def index_server():
    body = json.dumps(INDEX).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/index.json":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_available_list_from_an_index_url(make_app, tmp_path, remote, index_server):
    bare, _ = remote
    state = make_app(tmp_path).state.webui
    tab.install_extension(state, str(bare))
    data = ext_index.load_index(index_server + "/index.json")
    assert data == INDEX
    # A1111's defaults: newest first, "ads", "localization", "installed" hidden
    listing = ext_index.available(data, ["sd-webui-fixture"], [], selected_tags=ext_index.DEFAULT_TAGS)
    assert [r.name for r in listing.rows] == ["Alpha"] and listing.hidden == 2
    listing = ext_index.available(data, ["sd-webui-fixture"], [], sort_column=2)  # a-z, nothing hidden
    assert [(r.name, r.installed) for r in listing.rows] == [("Alpha", False), ("Beta", False), ("Fixture", True)]
    listing = ext_index.available(data, [], ["https://github.com/someone/sd-webui-beta"], selected_tags=["installed"],
                                  showing_type="show")
    assert [r.name for r in listing.rows] == ["Beta"]  # installed by remote (".git" ignored)
    assert [r.name for r in ext_index.available(data, [], [], filter_text="ADS").rows] == ["Beta"]
    code, tags, installable = tab.available_table(state, data, list(ext_index.DEFAULT_TAGS), "hide", "or", 0)
    assert installable == [("Alpha", "https://github.com/someone/sd-webui-alpha")]
    assert "Alpha" in code and "sd-webui-beta" not in code and "Extension hidden: 2" in code
    assert tags == ["script", "ads"]  # A1111: the index's tags plus those of the extensions shown


def test_index_that_cannot_be_loaded_says_why(index_server):
    with socket.socket() as s:  # a loopback port nobody listens on: what an offline machine gets
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ext_index.IndexUnavailable, match=r"Could not load the extension index from .*offline"):
        ext_index.load_index(f"http://127.0.0.1:{port}/index.json", timeout=5)
    with pytest.raises(ext_index.IndexUnavailable, match="HTTP 404"):
        ext_index.load_index(index_server + "/missing.json")
    with pytest.raises(ext_index.IndexUnavailable, match="must be an http"):
        ext_index.load_index("file:///etc/passwd")
    assert ext_index.DEFAULT_INDEX_URL == ("https://raw.githubusercontent.com/AUTOMATIC1111/"
                                           "stable-diffusion-webui-extensions/master/index.json")


def test_a_pending_restore_runs_at_start(make_app, tmp_path, remote):
    """A1111's restore_config_state_file (set by its Restore button before a restart, or carried over in an A1111
    config.json): restored before the extensions load, then cleared."""
    bare, work = remote
    app = make_app(tmp_path)
    state = app.state.webui
    target = tab.install_extension(state, str(bare))
    first = git(target, "rev-parse", "HEAD")
    _, message = tab.save_config_state(state, "start")
    path = re.search(r'to "(.*)"', message).group(1)
    push_commit(work, "later")
    git(target, "pull", "-q", "origin", "main")
    stored = {"disabled_extensions": ["sd-webui-fixture"], "restore_config_state_file": path}
    with open(state.config.ui_settings_file, "w", encoding="utf-8") as f:
        json.dump(stored, f)
    again = make_app(tmp_path).state.webui
    assert git(target, "rev-parse", "HEAD") == first
    assert again.settings.get("disabled_extensions") == [] and again.settings.get("restore_config_state_file") == ""
    assert again.extensions.get("sd-webui-fixture").enabled
    assert _config_json(app)["restore_config_state_file"] == ""
