"""Loading A1111 extensions, A1111's way (``modules/script_loading.py``, ``modules/scripts.py`` load_scripts).

1. ``preload_extensions(parser, ...)``, called by ``webui.config.parse`` before argv is parsed: each enabled
   extension's ``preload.py`` ``preload(parser)`` may add launch flags (A1111 shared_cmd_options.py: the
   ``extensions/`` ones unless disabled by the flags or config.json, the built-in ones always).
2. ``load_extensions(state)``, called by ``build_state``: the active extensions' ``install.py`` (only with
   ``--run-extension-installers``, never when $CI is set), their ``scripts/*.py`` imported one by one under a
   module name of their own with the extension's folder first on ``sys.path`` during the import (as A1111), the
   Script subclasses found there added to the txt2img/img2img runners, their ``javascript/*.js`` and ``style.css``
   recorded for the page, and the ``on_ui_settings`` callbacks run (so their options exist with --nowebui too).

Every failure -- a preload that raises, a script with a syntax error, a Script whose constructor, ``show`` or
``ui`` raises, a callback that raises later -- is logged naming the extension and recorded on its
:class:`~webui.plugins.extensions.Extension` (``errors``), and only that piece is skipped: the server starts and
the other extensions work.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import subprocess
import sys

from webui.plugins.extensions import Extension, ExtensionError, builtin_extensions_dir, discover

log = logging.getLogger(__name__)

#: The flag that lets ``install.py`` run (A1111 runs them unless --skip-install; here they never run by default).
INSTALLERS_FLAG = "--run-extension-installers"


# -- 1. preload.py: at argument parsing ------------------------------------------------------------------------------

def _settings_switches(settings_file: str | None) -> tuple[set[str], str]:
    """``disabled_extensions`` and ``disable_all_extensions`` from config.json (A1111 launch_utils.list_extensions
    reads them there, before the options exist)."""
    try:
        with open(settings_file or "", encoding="utf-8") as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return set(), "none"
    return set(stored.get("disabled_extensions") or []), str(stored.get("disable_all_extensions") or "none")


def preload_extensions(parser, *, extensions_dir: str, install_dir: str, settings_file: str | None,
                       disable_all: bool, disable_extra: bool) -> list[tuple[str, ExtensionError]]:
    """Run ``preload(parser)`` of each extension that loads at this start; returns (extension name, failure)."""
    disabled, mode = _settings_switches(settings_file)
    folders: list[tuple[str, list[str]]] = []
    if os.path.isdir(extensions_dir) and not (disable_all or disable_extra) and mode == "none":
        folders.append((extensions_dir, [n for n in sorted(os.listdir(extensions_dir)) if n not in disabled]))
    builtin = builtin_extensions_dir(install_dir)
    if os.path.isdir(builtin):  # A1111 preloads the built-in ones whatever the switches say
        folders.append((builtin, sorted(os.listdir(builtin))))
    failures = []
    for folder, names in folders:
        for name in names:
            path = os.path.join(folder, name, "preload.py")
            if not os.path.isfile(path):
                continue
            try:
                module = _load_module(path, _module_name(name, "preload"))
                if hasattr(module, "preload"):
                    module.preload(parser)
            except Exception as e:
                record = ExtensionError.from_exception("preload", path, e)
                log.error("Extension %s: preload() failed in %s: %s\n%s", name, path, record.message,
                          record.traceback.rstrip())
                failures.append((name, record))
    return failures


# -- 2. scripts/*.py: at build_state ---------------------------------------------------------------------------------

def _module_name(extension: str, stem: str) -> str:
    """A module name of the extension's own, so that two extensions' ``scripts/main.py`` never collide."""
    return "webui_extension_" + re.sub(r"\W", "_", f"{extension}__{stem}")


def _load_module(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_extensions(state) -> None:
    """Discover the extensions, load the active ones into ``state`` (see the module docstring)."""
    from webui.core.extension_manager.actions import restore_pending_state

    # a backup chosen in Backup/Restore (option restore_config_state_file) is restored first, as A1111 does
    restore_pending_state(state.settings, lambda: discover(state.config, state.settings).all)
    extensions = discover(state.config, state.settings)
    for name, stage, file, message, trace in state.config.extension_preload_errors:
        ext = extensions.get(name)
        if ext is not None:
            ext.errors.append(ExtensionError(stage, file, message, trace))
    state.extensions = extensions
    active = extensions.active()
    if not active:
        return
    from webui.compat import binding
    from webui.compat.runtime import CallbacksPlugin, CompatRuntime, Loading

    runtime = CompatRuntime(extensions=extensions)
    state.compat = runtime
    binding.bind(state)
    binding.install_finder()
    if state.config.run_extension_installers:
        _run_installers(state, active)

    classes: list[tuple[Extension, str, type]] = []
    for ext in active:
        ext.loaded = True
        ext.javascript = ext.list_files("javascript", ".js")
        style = os.path.join(ext.path, "style.css")
        ext.stylesheet = style if os.path.isfile(style) else None
        for path in ext.list_files("scripts", ".py"):
            runtime.loading = Loading(ext, path)
            saved_path = list(sys.path)
            sys.path.insert(0, ext.path)
            try:
                module = _load_module(path, _module_name(ext.name, os.path.splitext(os.path.basename(path))[0]))
            except Exception as e:
                ext.report("script", path, e)
                continue
            finally:
                sys.path[:] = saved_path
                runtime.loading = None
            ext.scripts.append(path)
            classes.extend((ext, path, cls) for cls in _script_classes(module))

    for runner in (state.scripts_txt2img, state.scripts_img2img):
        instances = []
        for ext, path, cls in classes:
            try:
                script = cls()
            except Exception as e:
                ext.report(f"script {cls.__name__}()", path, e)
                continue
            script.filename, script.extension = path, ext
            instances.append(script)
        runner.extend(instances)

    state.plugins.register(CallbacksPlugin(runtime), "extensions:callbacks")
    runtime.run("ui_settings")  # options exist before the API serves and with --nowebui (A1111 builds them for the UI)
    for ext in active:
        if ext.errors:
            log.warning("Extension %s: loaded with %d error(s): %s", ext.name, len(ext.errors),
                        "; ".join(str(e) for e in ext.errors))


def _script_classes(module) -> list[type]:
    """The Script subclasses a script file defines (A1111 register_scripts_from_module; imported ones skipped)."""
    from webui.plugins.scripts import Script

    return [obj for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Script) and obj.__module__ == module.__name__]


def _run_installers(state, active: list[Extension]) -> None:
    """Each active extension's install.py in a child Python, as A1111's run_extension_installer (cwd and
    PYTHONPATH the install folder). Refused when $CI is set: CI never installs extension requirements."""
    if os.environ.get("CI"):
        log.warning("%s ignored: $CI is set", INSTALLERS_FLAG)
        return
    for ext in active:
        script = os.path.join(ext.path, "install.py")
        if not os.path.isfile(script):
            continue
        pythonpath = os.pathsep.join([state.config.install_dir, os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": pythonpath}
        log.info("Extension %s: running install.py", ext.name)
        try:
            done = subprocess.run([sys.executable, script], cwd=state.config.install_dir, env=env, capture_output=True,
                                  text=True, timeout=1800, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as e:
            ext.report("install", script, e)
            continue
        if done.returncode != 0:
            ext.report("install", script, RuntimeError(
                f"install.py exited with {done.returncode}: {(done.stderr or done.stdout).strip()[-2000:]}"))
