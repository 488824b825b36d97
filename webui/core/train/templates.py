"""Prompt template files (A1111 ``list_textual_inversion_templates``): every file under
``--textual-inversion-templates-dir`` (default: the ``textual_inversion_templates`` folder of the install), keyed by
its file name. Each line of a template is one caption pattern; ``[name]`` becomes the embedding's (or hypernetwork's)
name and ``[filewords]`` the image's caption."""

from __future__ import annotations

import os

#: the folder shipped with the install, next to the ``webui`` package
DEFAULT_TEMPLATES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))), "textual_inversion_templates")


def list_templates(folder: str | None) -> dict[str, str]:
    """File name -> path, for every file under ``folder`` (sub-folders too, a later file of the same name wins, as
    in A1111), sorted by name."""
    found: dict[str, str] = {}
    folder = folder or DEFAULT_TEMPLATES_DIR
    if os.path.isdir(folder):
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for fn in sorted(files):
                found[fn] = os.path.join(root, fn)
    return dict(sorted(found.items()))


def read_template_lines(path: str) -> list[str]:
    """A1111 ``PersonalizedBase``: every line, stripped (an empty line is a valid, empty caption pattern)."""
    with open(path, encoding="utf8") as f:
        return [x.strip() for x in f]
