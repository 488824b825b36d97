"""A1111 ``modules.paths_internal``: the same folders as ``modules.paths``."""

from __future__ import annotations


def __getattr__(name: str):
    from webui.compat.modules import paths

    return getattr(paths, name)
