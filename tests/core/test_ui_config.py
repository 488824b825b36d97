"""webui.core.ui_config: A1111's ui-config.json rules without gradio (read, apply a field, dump, changes)."""

import json

from webui.core.ui_config import UiDefaults, default_path


def test_fields_dump_and_changes(tmp_path):
    path = tmp_path / "ui-config.json"
    path.write_text(json.dumps({"t/Steps/value": 7, "t/Sampler/value": "Nope", "t/Steps/maximum": "x"}))
    d = UiDefaults(str(path)).read()
    assert d.field("t/Steps/value", 20, "steps-control", convert=float) == (True, 7.0)
    assert d.field("t/Steps/maximum", 150, convert=float) == (False, 150)  # does not convert: ignored
    assert d.field("t/Sampler/value", "Euler", "sampler", fits=lambda v: v in ("Euler", "DDIM")) == (False, "Euler")
    assert d.field("t/CFG/value", 7.0, "cfg") == (False, 7.0)  # new: recorded
    d.dump()
    stored = json.loads(path.read_text())
    assert stored["t/CFG/value"] == 7.0 and stored["t/Steps/value"] == 7
    assert list(d.mapping) == ["t/Steps/value", "t/Sampler/value", "t/CFG/value"]
    # the Defaults page: current values against the file; an index into choices is that choice; "" is unset
    changes = list(d.changes(stored, [9, "Euler", 7.0], choices=lambda c: []))
    assert changes == [("t/Steps/value", 7, 9), ("t/Sampler/value", "Nope", "Euler")]
    assert d.apply_changes([9, 1, 7.0], choices=lambda c: ["Euler", "DDIM"] if c == "sampler" else []) == 2
    assert json.loads(path.read_text())["t/Sampler/value"] == "DDIM"
    assert d.apply_changes([9, "DDIM", 7.0]) == 0


def test_unreadable_file_is_never_overwritten(tmp_path):
    path = tmp_path / "ui-config.json"
    path.write_text("{broken")
    d = UiDefaults(str(path)).read()
    assert d.error_loading
    d.field("t/Steps/value", 20, "c")
    d.dump()
    assert path.read_text() == "{broken"
    assert default_path(str(tmp_path), None) == str(tmp_path / "ui-config.json")
