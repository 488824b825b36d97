"""Dynamic Prompts' Wildcards Manager without a browser (extensions-builtin/sd-dynamic-prompts/sddp_wildcards): the
file operations (list under the library's names, read, atomic save, delete, delete all, the refused paths), the
collection copy (none bundled; a local folder only), the tab's handlers, and that a saved wildcard is what the next
job's ``__name__`` draws from (no restart, no cache to purge)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("dynamicprompts")

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = ROOT / "extensions-builtin" / "sd-dynamic-prompts"

# the extension's own package, imported as the extension loader does: with the extension's folder on sys.path
sys.path.insert(0, str(EXTENSION))
try:
    from sddp_wildcards import files, tab
finally:
    sys.path.remove(str(EXTENSION))


def _script():
    spec = importlib.util.spec_from_file_location("dynamic_prompting_wildcards_test",
                                                  EXTENSION / "scripts" / "dynamic_prompting.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# at collection, as tests/plugins/test_dynamic_prompts.py: outside a loaded app the script registers no callbacks
dp = _script()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "wildcards"
    (root / "animals").mkdir(parents=True)
    (root / "animals" / "pets.txt").write_text("cat\ndog\n\n# a comment line\n")
    (root / "styles.yaml").write_text("# my styles\ncolors:\n  warm: [red, orange]\n  cold:\n    - blue\nsize: big\n")
    (root / "sub").mkdir()
    (root / "sub" / "birds.json").write_text('["owl", "crow"]')
    (root / "sub" / "more.json").write_text('{"fish": ["cod", "eel"]}')
    (root / "old.yml").write_text("a: [b]\n")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.txt").write_text("x\n")
    (root / "README.md").write_text("not a wildcard\n")
    return root


def _ctx(folder, **kw):
    return tab.Context(folder=folder, wrap="__", extension_dir=folder.parent / "no-extension", **kw)


def test_list_uses_the_librarys_names(folder):
    listed = {w.name: (w.file, w.key, w.count) for w in files.list_wildcards(folder)}
    assert listed == {
        "animals/pets": ("animals/pets.txt", "", 2),  # comment and blank lines are not values (the library's rule)
        "colors/cold": ("styles.yaml", "colors/cold", 1),
        "colors/warm": ("styles.yaml", "colors/warm", 2),
        "size": ("styles.yaml", "size", 1),
        "sub/birds": ("sub/birds.json", "", 2),  # a top-level list: the file's name
        "sub/fish": ("sub/more.json", "fish", 2),  # a mapping: its keys, under the file's folder
    }
    assert files.unread_files(folder) == ["old.yml"]  # the library reads .yaml only
    assert files.list_wildcards(folder / "missing") == []


def test_read_gives_lines_or_the_subtree(folder):
    assert files.read(folder, "animals/pets.txt") == "cat\ndog\n\n# a comment line\n"
    assert files.read(folder, "animals/pets") == "cat\ndog\n\n# a comment line\n"  # no suffix: .txt
    assert files.read(folder, "styles.yaml", "colors/warm") == "- red\n- orange\n"
    assert files.read(folder, "styles.yaml", "colors") == "warm:\n- red\n- orange\ncold:\n- blue\n"
    assert files.read(folder, "styles.yaml", "size") == "big\n"
    assert files.read(folder, "styles.yaml").startswith("# my styles\n")  # the whole file as written
    assert json.loads(files.read(folder, "sub/more.json", "fish")) == ["cod", "eel"]
    assert files.read(folder, "new.txt") == "" and files.read(folder, "styles.yaml", "no/such") == ""
    with pytest.raises(files.WildcardFileError, match="text file: it has no keys"):
        files.read(folder, "animals/pets.txt", "x")


def test_save_writes_atomically_and_keeps_the_rest(folder):
    assert files.save(folder, "animals/pets.txt", "zebra  \r\nlion\n\n\n") == "animals/pets.txt"
    assert (folder / "animals" / "pets.txt").read_text() == "zebra\nlion\n"
    # a new file in a new folder, named without its suffix
    assert files.save(folder, "plants/trees", "oak\nelm") == "plants/trees.txt"
    assert (folder / "plants" / "trees.txt").read_text() == "oak\nelm\n"
    # a key of a yaml file: that value replaced, the other keys kept
    files.save(folder, "styles.yaml", "- pink\n- red\n", "colors/warm")
    import yaml

    assert yaml.safe_load((folder / "styles.yaml").read_text()) == {
        "colors": {"warm": ["pink", "red"], "cold": ["blue"]}, "size": "big"}
    files.save(folder, "styles.yaml", "[tiny]", "sizes/small")  # a new key path
    assert yaml.safe_load((folder / "styles.yaml").read_text())["sizes"] == {"small": ["tiny"]}
    files.save(folder, "sub/more.json", '["trout"]', "fish")
    assert json.loads((folder / "sub" / "more.json").read_text()) == {"fish": ["trout"]}
    # a whole structured file is written as typed (its comments kept), once it parses
    files.save(folder, "new.yaml", "# kept\nshapes: [circle, square]")
    assert (folder / "new.yaml").read_text() == "# kept\nshapes: [circle, square]\n"
    names = {w.name: w.count for w in files.list_wildcards(folder)}
    assert names["animals/pets"] == 2 and names["plants/trees"] == 2 and names["shapes"] == 2
    assert names["colors/warm"] == 2 and names["sizes/small"] == 1 and names["sub/fish"] == 1
    # no temporary file is left behind
    assert not [p for p in folder.rglob("*.tmp")]


def test_save_refuses_bad_text_and_keys(folder):
    before = (folder / "styles.yaml").read_text()
    with pytest.raises(files.WildcardFileError, match="not valid YAML"):
        files.save(folder, "styles.yaml", "colors: [a, b", "")
    with pytest.raises(files.WildcardFileError, match="not valid JSON"):
        files.save(folder, "sub/more.json", "{fish: }")
    with pytest.raises(files.WildcardFileError, match="not valid JSON"):
        files.save(folder, "sub/more.json", "", "")
    with pytest.raises(files.WildcardFileError, match="text file: it has no keys"):
        files.save(folder, "animals/pets.txt", "x", "k")
    with pytest.raises(files.WildcardFileError, match="one list of values"):
        files.save(folder, "sub/birds.json", '["x"]', "k")
    with pytest.raises(files.WildcardFileError, match="holds values, not keys"):
        files.save(folder, "styles.yaml", "[x]", "size/small")
    with pytest.raises(files.WildcardFileError, match="must be a list"):
        files.save(folder, "styles.yaml", "12", "colors/warm")
    assert (folder / "styles.yaml").read_text() == before


@pytest.mark.parametrize("name, reason", [
    ("/etc/passwd.txt", "inside the wildcards folder"),
    ("../escape.txt", "names with '..'"),
    ("animals/../../escape.txt", "names with '..'"),
    ("..\\escape.txt", "names with '..'"),
    ("C:/x.txt", "inside the wildcards folder"),
    ("script.py", "not .py"),
    ("notes.md", "not .md"),
    ("old.yml", "reads .yaml files, not .yml"),
    (".hidden/secret.txt", "skips folders whose name starts with '.'"),
    (".txt", "cannot start with '.'"),
    ("", "Name the wildcard file"),
])
def test_paths_outside_the_folder_and_other_suffixes_are_refused(folder, name, reason):
    outside = folder.parent / "escape.txt"
    for operation in (lambda: files.save(folder, name, "x"), lambda: files.read(folder, name),
                      lambda: files.delete(folder, name)):
        with pytest.raises(files.WildcardFileError, match=reason.replace(".", r"\.").replace("(", r"\(")):
            operation()
    assert not outside.exists() and (folder / "old.yml").exists() and (folder / ".hidden" / "secret.txt").exists()


def test_a_link_leading_outside_is_refused(folder, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(files.WildcardFileError, match="leads outside the wildcards folder"):
        files.save(folder, "linked/x.txt", "x")
    assert list(elsewhere.iterdir()) == []


def test_delete_and_delete_all(folder):
    assert files.delete(folder, "animals/pets.txt") == "animals/pets.txt"
    assert not (folder / "animals").exists()  # the folder it left empty goes too
    assert files.delete(folder, "styles.yaml", "colors/warm") == "colors/warm of styles.yaml"
    import yaml

    assert yaml.safe_load((folder / "styles.yaml").read_text()) == {"colors": {"cold": ["blue"]}, "size": "big"}
    files.delete(folder, "styles.yaml", "colors/cold")  # the emptied mapping goes with it
    assert yaml.safe_load((folder / "styles.yaml").read_text()) == {"size": "big"}
    files.delete(folder, "styles.yaml", "size")  # nothing left: the file goes
    assert not (folder / "styles.yaml").exists()
    with pytest.raises(files.WildcardFileError, match="does not exist"):
        files.delete(folder, "animals/pets.txt")
    with pytest.raises(files.WildcardFileError, match="has no key"):
        files.delete(folder, "sub/more.json", "nope")
    # delete all: every wildcard file and the folders it empties; other files and hidden folders stay
    assert files.delete_all(folder) == 2
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        ".hidden", ".hidden/secret.txt", "README.md", "old.yml"]
    assert files.list_wildcards(folder) == []


def test_collections_none_bundled_and_a_local_folder_copied(folder, tmp_path):
    ctx = _ctx(folder, extension_dirs=(tmp_path / "extensions",))
    choices, note = tab.collection_choices(ctx)
    assert choices == [] and "No collections are bundled" in note
    status, _ = tab.copy_collection(ctx, "jumbo", False)
    assert "No collections are bundled" in status
    choices, note = tab.collection_choices(ctx, str(tmp_path / "missing"))
    assert choices == [] and "is not a folder on this server" in note

    # a folder the user names: each subfolder a collection; only wildcard files are copied
    source = tmp_path / "my-collections"
    (source / "jumbo" / "colors").mkdir(parents=True)
    (source / "jumbo" / "colors" / "shades.txt").write_text("teal\nnavy\n")
    (source / "jumbo" / "things.yaml").write_text("things: [a, b]\n")
    (source / "jumbo" / "LICENSE.md").write_text("license\n")
    (source / "parrotzone").mkdir()
    choices, note = tab.collection_choices(ctx, str(source))
    assert choices == ["jumbo", "parrotzone"] and "2 collections found" in note
    status, tree = tab.copy_collection(ctx, "jumbo", False, str(source))
    assert "Copied 2 files of jumbo" in status and "jumbo/colors/shades" in tree
    assert (folder / "jumbo" / "colors" / "shades.txt").read_text() == "teal\nnavy\n"
    assert not (folder / "jumbo" / "LICENSE.md").exists()
    # existing files are kept unless Overwrite existing
    (folder / "jumbo" / "colors" / "shades.txt").write_text("mine\n")
    status, _ = tab.copy_collection(ctx, "jumbo", False, str(source))
    assert "Copied 0 files" in status and "2 already there kept" in status
    assert (folder / "jumbo" / "colors" / "shades.txt").read_text() == "mine\n"
    tab.copy_collection(ctx, "jumbo", True, str(source))
    assert (folder / "jumbo" / "colors" / "shades.txt").read_text() == "teal\nnavy\n"
    # a label that is not one of the listed collections (a forged request) copies nothing
    status, _ = tab.copy_collection(ctx, "../../etc", False, str(source))
    assert "No collection ../../etc" in status

    # an installed copy of the real extension in extensions/ offers its collections/ without naming a folder
    real = tmp_path / "extensions" / "sd-dynamic-prompts-real"
    (real / "sd_dynamic_prompts").mkdir(parents=True)
    (real / "collections" / "nsp").mkdir(parents=True)
    assert tab.collection_choices(ctx)[0] == ["nsp"]

    # a server reachable from the network (without --enable-insecure-extension-access) takes no folder from the page
    locked = _ctx(folder, extension_dirs=(tmp_path / "extensions",), folder_naming=False)
    choices, note = tab.collection_choices(locked, str(source))
    assert choices == [] and "Naming a server folder is disabled" in note
    assert "Naming a server folder is disabled" in tab.copy_collection(locked, "jumbo", True, str(source))[0]
    assert tab.collection_choices(locked)[0] == ["nsp"]


def test_tab_handlers(folder):
    ctx = _ctx(folder)
    tree = tab.tree_html(ctx)
    assert "6 wildcards in" in tree and "data-name='colors/warm'" in tree and "old.yml" in tree
    assert "1 of 6 wildcards" in tab.tree_html(ctx, "WARM") and "No wildcard name contains" in tab.tree_html(ctx, "zz")
    name, file, key, text, status = tab.select(ctx, "colors/warm")
    assert (name, file, key, text) == ("__colors/warm__", "styles.yaml", "colors/warm", "- red\n- orange\n")
    assert "2 values from key colors/warm of styles.yaml" in status
    assert "not in the wildcards folder" in tab.select(ctx, "gone")[4]
    # Open: a file typed in File, new ones open empty
    assert tab.open_file(ctx, "animals/pets", "")[:2] == ("__animals/pets__", "animals/pets.txt")
    assert "is a new file" in tab.open_file(ctx, "new/one.txt", "")[4]
    name, file, status, tree = tab.save(ctx, "new/one.txt", "", "a\nb\n")
    assert (name, file) == ("__new/one__", "new/one.txt") and "Saved new/one.txt" in status
    assert "data-name='new/one'" in tree
    name, file, status, _ = tab.save(ctx, "../x.txt", "", "a")
    assert name == "" and "error" in status and "names with &#x27;..&#x27;" in status
    # Delete only when the page's confirmation said yes
    assert "Not deleted" in tab.delete(ctx, "new/one.txt", "", False)[4] and (folder / "new" / "one.txt").exists()
    result = tab.delete(ctx, "new/one.txt", "", True)
    assert result[:4] == ("", "", "", "") and "Deleted new/one.txt" in result[4] and "new/one" not in result[5]
    assert "Nothing deleted" in tab.delete_all(ctx, False)[0] and files.list_wildcards(folder)
    assert "Deleted 4 wildcard files" in tab.delete_all(ctx, True)[0] and files.list_wildcards(folder) == []
    # names are escaped in the tree
    files.save(folder, "<b>x</b>.txt", "v")
    assert "<b>x</b>" not in tab.tree_html(ctx) and "&lt;b&gt;x&lt;/b&gt;" in tab.tree_html(ctx)


def test_a_saved_wildcard_is_used_by_the_next_job_at_once(folder):
    """The script makes a WildcardManager for every job, so the file as saved now is what the next prompt draws."""
    args = [a.value for a in dp.ScriptDynamicPrompts().ui(False)]

    def job(prompt, seed):
        p = types.SimpleNamespace(
            all_prompts=[prompt] * 2, all_negative_prompts=[""] * 2, prompt=prompt, negative_prompt="", n_iter=2,
            batch_size=1, all_seeds=[seed, seed + 1], all_subseeds=[1, 2], seed=seed, subseed_strength=0.0,
            extra_generation_params={}, plugin_data={}, is_img2img=False, comments=[],
            opts=types.SimpleNamespace(get=lambda key: str(folder) if key == "wildcard_dir" else None))
        dp.ScriptDynamicPrompts().process(p, *args)
        return p.all_prompts

    assert set(job("a __animals/pets__", 3)) <= {"a cat", "a dog"}
    files.save(folder, "animals/pets.txt", "zebra\n")
    assert job("a __animals/pets__", 3) == ["a zebra", "a zebra"]
    files.save(folder, "styles.yaml", "[violet]", "colors/warm")
    assert job("__colors/warm__ {x|x}", 9) == ["violet x", "violet x"]
    files.delete(folder, "animals/pets.txt")
    # a wildcard that is gone: the library leaves the name in the prompt (its way)
    assert job("a __animals/pets__", 3) == ["a __animals/pets__"] * 2


def test_the_tab_is_registered_by_the_loaded_extension(tmp_path, models_root):
    """The app's extension loader runs the script: its on_ui_tabs callback gives the "Wildcards Manager" tab."""
    from webui.app import build_app
    from webui.config import parse

    root, _ = models_root
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    (data / "models" / "Stable-diffusion").symlink_to(root / "models" / "Stable-diffusion", target_is_directory=True)
    wildcards = tmp_path / "wc"
    (wildcards / "x").mkdir(parents=True)
    (wildcards / "x" / "y.txt").write_text("1\n2\n")
    (data / "config.json").write_text(json.dumps({"wildcard_dir": str(wildcards)}))
    app = build_app(parse(["--nowebui", "--data-dir", str(data), "--skip-load-model-at-start"]))
    state = app.state.webui
    ext = state.extensions.get("sd-dynamic-prompts")
    assert ext is not None and not ext.errors
    assert any(path.endswith(os.path.join("javascript", "wildcards_manager.js")) for path in ext.javascript)
    tabs = state.plugins.call("on_ui_tabs", state=state)
    (blocks, _title, elem_id), = [t for group in tabs for t in group if t[1] == "Wildcards Manager"]
    assert elem_id == "sddp-wildcard-manager"
    ids = {getattr(b, "elem_id", None) for b in blocks.blocks.values()}
    assert {"sddp-wildcard-tree", "sddp-wildcard-file-editor", "sddp-wildcard-save-button",
            "sddp-wildcard-delete-button", "sddp-wildcard-delete-tree-button"} <= ids
