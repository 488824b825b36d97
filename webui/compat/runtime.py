"""The state A1111's API keeps in module globals, kept per app instead: the callbacks extensions registered
(``script_callbacks.on_*``), which extension/script is being imported (``scripts.basedir()``), and the pluggy plugin
that calls those callbacks from our hooks. One :class:`CompatRuntime` per AppState (``state.compat``).
"""

from __future__ import annotations

import inspect
import threading
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from webui.compat import binding
from webui.plugins.hooks import hookimpl

log = logging.getLogger(__name__)

#: A1111 1.10 callback kinds this server calls (script_callbacks.on_<kind>), with where it calls them.
CALLBACK_KINDS = (
    "app_started",  # build_app, after the page is built (demo, app); also with --nowebui (demo None)
    "model_loaded",  # after a checkpoint is loaded (sd_model view)
    "ui_tabs",  # the page's extra tabs
    "ui_settings",  # once at start, after the scripts are imported: options added here exist with --nowebui too
    "before_image_saved",  # before each generated image is written
    "image_saved",  # after it is written
    "cfg_denoiser",  # each denoiser call, before the UNet
    "cfg_denoised",  # after the UNet, before the CFG combination
    "cfg_after_cfg",  # after the CFG combination
    "before_component",  # each page component, see docs/extensions.md
    "after_component",
    "infotext_pasted",  # an infotext parsed for pasting
    "before_ui",  # before the page is built
)


@dataclass
class Callback:
    kind: str
    function: Callable
    name: str | None
    script: str | None  # the file that registered it
    extension: Any  # the Extension, or None (registered from outside any extension)


@dataclass
class Loading:
    extension: Any
    script: str


@dataclass
class CompatRuntime:
    """The per-app registry behind ``modules.script_callbacks`` and ``scripts.basedir()``."""

    extensions: Any  # webui.plugins.extensions.ExtensionSet
    callbacks: dict[str, list[Callback]] = field(default_factory=lambda: {k: [] for k in CALLBACK_KINDS})
    loading: Loading | None = None
    # the running job's effective options (stored + override_settings) on the thread running it: A1111 applies a
    # request's override_settings to shared.opts for the job's duration; we never change the stored ones, so
    # shared.opts reads these on that thread instead
    job: threading.local = field(default_factory=threading.local)

    def job_settings(self):
        return getattr(self.job, "settings", None)

    def add(self, kind: str, function: Callable, name: str | None = None) -> None:
        script, extension = self._caller()
        self.callbacks[kind].append(Callback(kind, function, name, script, extension))

    def _caller(self) -> tuple[str | None, Any]:
        if self.loading is not None:
            return self.loading.script, self.loading.extension
        extension = extension_of_stack(self.extensions)
        return (extension[1] if extension else None), (extension[0] if extension else None)

    def remove_script(self, script: str | None) -> None:
        for kind, items in self.callbacks.items():
            self.callbacks[kind] = [c for c in items if c.script != script]

    def remove_function(self, function: Callable) -> None:
        for kind, items in self.callbacks.items():
            self.callbacks[kind] = [c for c in items if c.function != function]

    def run(self, kind: str, *args, **kwargs) -> list:
        """Call every ``kind`` callback; one that raises is reported on its extension and skipped (A1111
        report_exception), never failing the others or the caller. Returns the results."""
        results = []
        for cb in list(self.callbacks[kind]):
            try:
                results.append(cb.function(*args, **kwargs))
            except Exception as e:
                if cb.extension is not None:
                    cb.extension.report(f"callback:{kind}", cb.script, e)
                else:
                    log.exception("callback %s (%s) failed", kind, cb.name or cb.function)
        return results

    def has(self, kind: str) -> bool:
        return bool(self.callbacks[kind])


def extension_of_stack(extensions) -> tuple[Any, str] | None:
    """(extension, file) of the innermost caller frame that lives in an extension's folder, or None."""
    if extensions is None:
        return None
    roots = [(os.path.join(e.path, ""), e) for e in extensions.all]
    for frame in inspect.stack()[1:]:
        filename = os.path.abspath(frame.filename)
        for root, ext in roots:
            if filename.startswith(root):
                return ext, filename
    return None


def runtime() -> CompatRuntime:
    state = binding.current()
    rt = getattr(state, "compat", None)
    if rt is None:
        raise RuntimeError("A1111's modules.* API is used outside an app that loaded extensions")
    return rt


def calling_extension():
    rt = runtime()
    return rt._caller()[1]


class ImageSaveParams:
    """A1111 ``script_callbacks.ImageSaveParams``: image, p, filename, pnginfo (our hook's params with ``p``)."""

    def __init__(self, params, p):
        self._params = params
        self.p = p

    def __getattr__(self, name):
        return getattr(self._params, name)

    def __setattr__(self, name, value):
        if name in ("_params", "p"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._params, name, value)


class CallbacksPlugin:
    """Calls the extensions' script callbacks from our hooks (registered as plugin ``extensions:callbacks``).
    Hooks nobody registered a callback for are not implemented by an empty function: the denoiser hooks are
    checked with ``has`` by the sampler, so they are registered only when some callback exists."""

    def __init__(self, rt: CompatRuntime):
        self.rt = rt

    @hookimpl(tryfirst=True)
    def before_process(self, p):
        self.rt.job.settings = p.opts

    @hookimpl(tryfirst=True)
    def process(self, p):
        self.rt.job.settings = p.opts
        if p.scope is not None:
            p.scope.callback(lambda: setattr(self.rt.job, "settings", None))

    @hookimpl
    def on_app_mounted(self, app, state, demo):
        self.rt.run("app_started", demo, app)

    @hookimpl
    def on_before_ui(self, state):
        self.rt.run("before_ui")

    @hookimpl
    def on_ui_components(self, state, components):
        """A1111 calls before_component / after_component as each component is created; here both run for each
        component of the finished page, in page order, inside its Blocks (docs/extensions.md)."""
        if not (self.rt.has("before_component") or self.rt.has("after_component")):
            return
        for component, kwargs in components:
            self.rt.run("before_component", component, **kwargs)
            self.rt.run("after_component", component, **kwargs)

    @hookimpl
    def on_model_loaded(self, sd_model):
        from webui.compat.modules.shared import SdModel

        if self.rt.has("model_loaded"):
            self.rt.run("model_loaded", SdModel(sd_model))

    @hookimpl
    def on_ui_tabs(self, state):
        tabs = []
        for result in self.rt.run("ui_tabs"):
            tabs.extend(tuple(t)[:3] for t in (result or []))
        return tabs

    @hookimpl
    def on_before_image_saved(self, p, params):
        if self.rt.has("before_image_saved"):
            self.rt.run("before_image_saved", ImageSaveParams(params, p))

    @hookimpl
    def on_image_saved(self, p, params):
        if self.rt.has("image_saved"):
            self.rt.run("image_saved", ImageSaveParams(params, p))

    @hookimpl
    def on_infotext_pasted(self, infotext, params):
        self.rt.run("infotext_pasted", infotext, params)


class DenoiserCallbacksPlugin:
    """The per-step callbacks (cfg_denoiser / cfg_denoised / cfg_after_cfg), a separate plugin registered only when
    an extension registered one, so that sampling without them pays nothing (``PluginManager.has``)."""

    def __init__(self, rt: CompatRuntime):
        self.rt = rt

    @hookimpl
    def on_cfg_denoiser(self, p, params):
        self.rt.run("cfg_denoiser", params)

    @hookimpl
    def on_cfg_denoised(self, p, params):
        self.rt.run("cfg_denoised", params)

    @hookimpl
    def on_cfg_after_cfg(self, p, params):
        self.rt.run("cfg_after_cfg", params)
