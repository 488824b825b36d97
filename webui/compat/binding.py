"""Which running app A1111's module-level names (``modules.shared.opts``, ``script_callbacks.on_ui_tabs`` ...) refer
to, and the import hook that makes ``import modules.X`` load ``webui.compat.modules.X``.

A1111's extension API is module globals (``shared.opts``, ``shared.state``, the callback lists). Our rule is one
AppState and no global mutable state, so every ``modules.*`` name here is a thin *view*: it looks the running
AppState up at each use through :func:`current`. The state itself (options, progress, the callbacks extensions
registered, their scripts) stays on the AppState. The one module-level slot, :data:`_BOUND`, holds which AppState
that is; the extension loader binds it before it imports an extension (``bind``), and it is re-bound when another
app loads extensions in the same process (tests build several). Nothing runs at import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from typing import Any

#: The AppState A1111's module-level names are views of (a one-element list: the only mutable slot, see above).
_BOUND: list[Any] = [None]
_LOCK = threading.Lock()

#: The package A1111 extensions import from, and where ours lives.
ALIAS = "modules"
TARGET = "webui.compat.modules"
DOCS = "docs/extensions.md"


def bind(state) -> None:
    """Make ``state`` the AppState that ``modules.*`` names refer to from now on."""
    with _LOCK:
        _BOUND[0] = state


def current():
    """The bound AppState; a RuntimeError (naming why) when no app has loaded extensions in this process."""
    state = _BOUND[0]
    if state is None:
        raise RuntimeError("A1111's modules.* API is used before the server loaded its extensions (no app is bound)")
    return state


def missing(module: str, name: str) -> AttributeError:
    """The error for an A1111 API name this server does not provide: it names it, so the console says which
    extension needs what."""
    return AttributeError(f"{module}.{name} is not supported by this server's A1111 extension API (see {DOCS})")


class _AliasLoader(importlib.abc.Loader):
    """Gives ``modules.X`` the already imported ``webui.compat.modules.X`` (one module object, two names)."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        # the import system set the alias spec on the shared module object; keep the real one there
        real = sys.modules[self.target]
        module.__spec__ = getattr(real, "__real_spec__", None) or module.__spec__


class ModulesFinder(importlib.abc.MetaPathFinder):
    """``import modules`` / ``modules.X`` -> ``webui.compat.modules`` / ``.X``; a submodule we do not provide raises
    ModuleNotFoundError naming it and pointing at the documentation of what is supported."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        real = TARGET + fullname[len(ALIAS):]
        if importlib.util.find_spec(real) is None:
            raise ModuleNotFoundError(
                f"{fullname} is not provided by this server's A1111 extension API (see {DOCS})", name=fullname)
        module = importlib.import_module(real)
        if not hasattr(module, "__real_spec__"):
            module.__real_spec__ = module.__spec__
        is_package = hasattr(module, "__path__")
        spec = importlib.machinery.ModuleSpec(fullname, _AliasLoader(real), is_package=is_package)
        if is_package:
            spec.submodule_search_locations = list(module.__path__)
        return spec


def install_finder() -> None:
    """Put the ``modules`` finder first on ``sys.meta_path`` (idempotent). A1111 extensions import ``modules.*``
    at load time and inside functions later, so it stays once installed."""
    with _LOCK:
        if not any(isinstance(f, ModulesFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, ModulesFinder())
