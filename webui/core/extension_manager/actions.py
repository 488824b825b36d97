"""The Extensions tab's actions on the stored options and the extension folders (A1111 ui_extensions
apply_and_restart, check_updates, install_extension_from_url, save_config_state, restore_config_state), written on
plain objects so that the tab is a thin adapter: ``settings`` is the app's Settings, ``extensions`` its extension
list (webui.plugins.extensions.Extension objects). Restarting is the caller's (the app's server control).
"""

from __future__ import annotations

import logging
import os

from webui.core.extension_manager import config_states, git
from webui.core.extension_manager.install import check_access

log = logging.getLogger(__name__)

DISABLE_ALL_CHOICES = ("none", "extra", "all")


def apply_changes(settings, extensions, *, enabled: list[str], update: list[str], disable_all: str,
                  access_disabled: bool, states_folder: str, install_dir: str) -> list[str]:
    """A1111 apply_and_restart without the restart: the extensions to update are backed up first ("Backup
    (pre-update)"), then reset to their remote's head; ``disabled_extensions`` becomes every extension not in
    ``enabled``; ``disable_all_extensions`` is stored; the options are saved. Returns the update failures."""
    check_access(access_disabled)
    if disable_all not in DISABLE_ALL_CHOICES:
        raise ValueError(f"Disable all extensions: {disable_all!r} is not one of {', '.join(DISABLE_ALL_CHOICES)}")
    known = {ext.name for ext in extensions}
    unknown = [name for name in [*enabled, *update] if name not in known]
    if unknown:
        raise ValueError(f"unknown extension(s): {', '.join(unknown)}; installed: {', '.join(sorted(known))}")
    failures = []
    update_set = set(update)
    if update_set:
        config_states.save_config_state(states_folder, "Backup (pre-update)", extensions, install_dir)
    for ext in extensions:
        if ext.name not in update_set:
            continue
        try:
            git.fetch_and_reset_hard(ext.path)
            ext.have_info_from_repo = False
        except git.GitError as e:
            log.error("Error getting updates for %s: %s", ext.name, e)
            failures.append(f"Error getting updates for {ext.name}: {e}")
    enabled_set = set(enabled)
    settings.set("disabled_extensions", [ext.name for ext in extensions if ext.name not in enabled_set])
    settings.set("disable_all_extensions", disable_all)
    settings.save()
    return failures


def check_updates(extensions, disabled: list[str], access_disabled: bool) -> list[str]:
    """A1111 check_updates: every enabled extension with a remote asks it; ``status`` / ``can_update`` are set on
    each. Returns one message per extension whose remote could not be reached (A1111 only logs them)."""
    check_access(access_disabled)
    problems = []
    for ext in extensions:
        ext.read_info_from_repo()
        if ext.remote is None or ext.name in disabled:
            continue
        result = git.check_updates(ext.path)
        ext.can_update, ext.status = result.can_update, result.status
        if result.error:
            problems.append(f"{ext.name}: could not check for updates ({result.error})")
    return problems


def restore_state(settings, extensions, config_state: dict, restore_type: str, access_disabled: bool) -> list[str]:
    """A1111 restore_config_state for ``restore_type`` "extensions": each extension reset to its saved commit and
    the saved enabled set stored in ``disabled_extensions`` (A1111 does this at the next start, through the option
    ``restore_config_state_file``; here it is done now and the restart that follows loads the restored set).
    "webui" and "both" would reset this server's own checkout with git; that is refused: update the server with git
    yourself. Returns the report lines."""
    check_access(access_disabled)
    if restore_type not in ("extensions", "webui", "both"):
        raise ValueError(f"State to restore: {restore_type!r} is not one of extensions, webui, both")
    if restore_type != "extensions":
        raise ValueError("Restoring the web UI's own commit is not supported here (it would reset this server's "
                         "checkout); restore \"extensions\", and update the server itself with git")
    disabled, results = config_states.restore_extension_config(config_state, extensions)
    settings.set("disabled_extensions", disabled)
    settings.save()
    return [str(r) for r in results]


def restore_pending_state(settings, list_extensions) -> list[str] | None:
    """A1111 initialize_util.restore_config_state_file, at start before the extensions load: when option
    ``restore_config_state_file`` names a backup (A1111's "Restore Selected Config" sets it and restarts; a config.json
    carried over from A1111 may hold one), the option is cleared and the backup's extension state restored.
    ``list_extensions()`` lists the extension folders (called only then). Returns the report, or None."""
    import json

    path = settings.get("restore_config_state_file")
    if not path:
        return None
    settings.set("restore_config_state_file", "")
    settings.save()
    if not os.path.isfile(path):
        log.error("!!! Config state backup not found: %s", path)
        return [f"Config state backup not found: {path}"]
    log.info("*** About to restore extension state from file: %s", path)
    try:
        with open(path, encoding="utf-8") as f:
            config_state = json.load(f)
        disabled, results = config_states.restore_extension_config(config_state, list_extensions())
    except (OSError, ValueError) as e:
        log.error("Config state %s cannot be restored: %s", path, e)
        return [f"Config state {path} cannot be restored: {e}"]
    settings.set("disabled_extensions", disabled)
    settings.save()
    report = [str(r) for r in results]
    for line in report:
        log.info("  %s", line)
    return report


def find_state(folder: str, name: str) -> dict:
    """A saved config state by its list name ("<name>: <date>"), as the Backup/Restore dropdown shows it."""
    states = config_states.list_config_states(folder)
    if name not in states:
        raise ValueError(f"no saved config {name!r}; saved: {', '.join(states) or 'none'}")
    return states[name]


__all__ = ["apply_changes", "check_updates", "restore_state", "find_state", "DISABLE_ALL_CHOICES"]
