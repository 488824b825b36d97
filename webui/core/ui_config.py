"""ui-config.json (``--ui-config-file``): the page's per-control defaults and limits, as A1111's
``modules/ui_loadsave.UiLoadsave`` keeps them -- without gradio: the UI walks its controls and asks this object.

Keys are A1111's: ``<tab>/<label>/<field>`` (``txt2img/Sampling steps/value``, ``txt2img/Width/maximum``,
``img2img/Generate/visible``). At start the file is read; a control whose key is stored takes the stored value
(when it fits: a dropdown value must be one of its choices), else its own value is recorded; then the file is
written back with every key (A1111 ``dump_defaults``: new controls appear in it) unless it could not be read.
Settings > Defaults compares the controls' current values with the file and writes the changes (read at the next
start, as in A1111).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from webui.core.io.files import atomic_write

log = logging.getLogger(__name__)


def default_path(data_dir: str, flag: str | None) -> str:
    """``--ui-config-file`` (relative to the working folder, as A1111), else DATA/ui-config.json."""
    return os.path.abspath(flag) if flag else os.path.join(data_dir, "ui-config.json")


class UiDefaults:
    """The stored defaults and which control each ``.../value`` key belongs to (A1111 ``UiLoadsave``)."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.values: dict[str, Any] = {}
        self.mapping: dict[str, Any] = {}  # key of a "value" field -> the control (opaque here), in page order
        self.error_loading = False

    def read(self) -> UiDefaults:
        """Read the file (missing: empty). A file that cannot be read is reported and left alone (never
        overwritten), as A1111."""
        try:
            if os.path.exists(self.filename):
                self.values = self.read_file()
        except (OSError, ValueError) as e:
            self.error_loading = True
            log.error("reading %s: %s (it will not be overwritten)", self.filename, e)
        return self

    def read_file(self) -> dict[str, Any]:
        with open(self.filename, encoding="utf8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")  # noqa: TRY004 -- a bad file, reported like a JSON error
        return data

    def field(self, key: str, current: Any, control: Any = None, *, fits: Callable[[Any], bool] | None = None,
              convert: Callable[[Any], Any] | None = None) -> tuple[bool, Any]:
        """A1111 ``apply_field``: (use it, value) for one field of a control. Unknown key: the control's own value
        is recorded and kept. A stored value that ``fits`` (converted by ``convert``, which may raise ValueError) is
        used. Value fields are remembered for the Defaults page."""
        stored = self.values.get(key)
        use, value = False, current
        if stored is None:
            self.values[key] = current
        elif fits is None or fits(stored):
            try:
                value = convert(stored) if convert is not None else stored
                use = True
            except (TypeError, ValueError):
                pass
        if key.endswith("/value") and control is not None and key not in self.mapping:
            self.mapping[key] = control
        return use, value

    def dump(self) -> None:
        """A1111 ``dump_defaults``: write every key back, unless the file exists and could not be read."""
        if self.error_loading and os.path.exists(self.filename):
            return
        self.write(self.values)

    def write(self, values: dict[str, Any]) -> None:
        atomic_write(self.filename, json.dumps(values, indent=4, ensure_ascii=False))

    def changes(self, stored: dict[str, Any], current: Iterable[Any],
                choices: Callable[[Any], list] | None = None) -> Iterator[tuple[str, Any, Any]]:
        """A1111 ``iter_changes``: (key, stored value, current value) of the mapped controls whose current value
        differs (an index into a control's choices counts as that choice; empty values count as unset)."""
        for (key, control), new in zip(self.mapping.items(), current):
            old = stored.get(key)
            options = choices(control) if choices is not None else []
            if isinstance(new, int) and not isinstance(new, bool) and options:
                if new >= len(options):
                    continue
                new = options[new]
            if new == old:
                continue
            if old is None and new == "" or new == []:
                continue
            yield key, old, new

    def apply_changes(self, current: Iterable[Any], choices: Callable[[Any], list] | None = None) -> int:
        """A1111 ``ui_apply``: write the changed values into the file; how many changed."""
        stored = self.read_file() if os.path.exists(self.filename) else {}
        changed = 0
        for key, _, new in list(self.changes(dict(stored), current, choices)):
            stored[key] = new
            changed += 1
        if changed:
            self.write(stored)
        return changed
