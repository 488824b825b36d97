"""Backup/Restore of the web UI and extension state (A1111 1.10 ``modules/config_states.py``): a JSON file per
backup in ``<data>/config_states/`` with A1111's shape, so backups made by A1111 restore here and the other way::

    {"created_at": <unix time, float>, "name": "...",
     "webui": {"remote", "commit_hash", "commit_date", "branch"},
     "extensions": {"<name>": {"name", "path", "enabled", "is_builtin", "remote", "commit_hash", "commit_date",
                               "branch", "have_info_from_repo"}, ...}}

Restoring the extensions (A1111 restore_extension_config) resets each non-built-in extension that is a git checkout
to its saved commit and rebuilds ``disabled_extensions``: an extension missing from the backup, or saved disabled,
is disabled; built-ins are left alone (and so end up enabled, as in A1111).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from webui.core.extension_manager import git

log = logging.getLogger(__name__)

CONFIG_STATES_DIRNAME = "config_states"  # A1111 paths_internal.config_states_dir = <data>/config_states


def config_states_dir(data_dir: str) -> str:
    return os.path.join(data_dir, CONFIG_STATES_DIRNAME)


def list_config_states(folder: str) -> "OrderedDict[str, dict]":
    """A1111 list_config_states: every ``*.json`` backup, newest first, keyed "<name>: <asctime of created_at>";
    each with its ``filepath``. Unreadable files are skipped with a warning (A1111 would fail the whole list)."""
    os.makedirs(folder, exist_ok=True)
    states = []
    for filename in os.listdir(folder):
        if not filename.endswith(".json"):
            continue
        path = os.path.join(folder, filename)
        try:
            with open(path, encoding="utf-8") as f:
                state = json.load(f)
            float(state["created_at"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("Config state %s cannot be read: %s", path, e)
            continue
        state["filepath"] = path
        states.append(state)
    states.sort(key=lambda cs: cs["created_at"], reverse=True)
    out: OrderedDict[str, dict] = OrderedDict()
    for state in states:
        out[f"{state.get('name', 'Config')}: {time.asctime(time.gmtime(state['created_at']))}"] = state
    return out


def extension_config(extensions) -> dict:
    """A1111 get_extension_config: every extension's entry (git info read first)."""
    out = {}
    for ext in extensions:
        ext.read_info_from_repo()
        out[ext.name] = {
            "name": ext.name,
            "path": ext.path,
            "enabled": ext.enabled,
            "is_builtin": ext.is_builtin,
            "remote": ext.remote,
            "commit_hash": ext.commit_hash,
            "commit_date": ext.commit_date,
            "branch": ext.branch,
            "have_info_from_repo": ext.have_info_from_repo,
        }
    return out


def get_config(extensions, install_dir: str) -> dict:
    """A1111 get_config: the state now."""
    return {"created_at": datetime.now().timestamp(), "webui": git.repo_info(install_dir),
            "extensions": extension_config(extensions)}


def save_config_state(folder: str, name: str | None, extensions, install_dir: str) -> str:
    """A1111 save_config_state: write the current state as ``<timestamp>_<name>.json``; returns its path."""
    state = get_config(extensions, install_dir)
    name = os.path.basename(name or "Config") or "Config"
    state["name"] = name
    os.makedirs(folder, exist_ok=True)
    filename = os.path.join(folder, f"{datetime.now().strftime('%Y_%m_%d-%H_%M_%S')}_{name}.json")
    log.info("Saving backup of webui/extension state to %s.", filename)
    with open(filename, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=4, ensure_ascii=False)
    return filename


@dataclass
class RestoreResult:
    """One extension's line of A1111's restore report: ``ok`` with the commit it moved to, or the failure."""

    name: str
    previous: str
    ok: bool
    result: str

    def __str__(self) -> str:
        return f"+ {self.name}: {self.previous} -> {self.result}" if self.ok else \
            f"! {self.name}: FAILURE ({self.result})"


def restore_extension_config(config_state: dict, extensions) -> tuple[list[str], list[RestoreResult]]:
    """A1111 restore_extension_config: reset each non-built-in extension to its saved commit and work out the
    disabled set. Returns (the new ``disabled_extensions``, the report). An extension already at its saved commit is
    not fetched (A1111 fetches anyway; this keeps a restore of the enabled set working offline)."""
    if "extensions" not in config_state:
        raise ValueError("No extension data saved to config")
    saved = config_state["extensions"]
    disabled: list[str] = []
    results: list[RestoreResult] = []
    for ext in extensions:
        if ext.is_builtin:
            continue
        ext.read_info_from_repo()
        current = ext.commit_hash or ""
        if ext.name not in saved:
            disabled.append(ext.name)
            results.append(RestoreResult(ext.name, current[:8], False,
                                         "Saved extension state not found in config, marking as disabled"))
            continue
        entry = saved[ext.name]
        wanted = entry.get("commit_hash")
        if wanted and wanted != current:
            try:
                git.fetch_and_reset_hard(ext.path, wanted)
                ext.have_info_from_repo = False
                ext.read_info_from_repo()
                results.append(RestoreResult(ext.name, current[:8], True, wanted[:8]))
            except git.GitError as e:
                results.append(RestoreResult(ext.name, current[:8], False, str(e)))
        elif not wanted:
            results.append(RestoreResult(ext.name, current[:8], False, "No commit hash found in config"))
        if not entry.get("enabled", False):
            disabled.append(ext.name)
    return disabled, results
