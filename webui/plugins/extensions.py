"""A1111 extensions: discovery, the enabled set, and what each one loaded or failed to load.

Every folder in ``extensions/`` (under ``--data-dir``) and in the project's ``extensions-builtin/`` is an extension
(A1111 ``modules/extensions.py``). This module only *lists* them and decides which are active; importing their code
is ``webui.plugins.extension_loader`` (preload.py at argument parsing, ``scripts/*.py`` at ``build_state``).

The shape other parts read (the Extensions tab, ``/sdapi/v1/extensions``), kept stable on purpose:

``state.extensions`` is an :class:`ExtensionSet`:
    ``.all``            every :class:`Extension`, A1111 1.10's order: ``extensions-builtin/`` sorted by folder
                        name, then ``extensions/`` sorted by folder name (scripts load in this order too).
    ``.active()``       the ones loaded at start (A1111 ``extensions.active()``): none with
                        ``--disable-all-extensions`` or option ``disable_all_extensions == "all"``; only built-ins
                        with ``--disable-extra-extensions`` or ``"extra"``; else every ``enabled`` one.
    ``.get(name)``      by folder name, or None.
    ``.disabled_by``    "all" / "extra" when the flags or the option turn extensions off as a whole, else None.
    ``.extensions_dir`` / ``.builtin_dir``  the two folders.

:class:`Extension` (one per folder; fields in A1111's names where A1111 has them):
    ``name``            folder name (A1111's ``name``; what ``disabled_extensions`` lists).
    ``path``            absolute folder path.
    ``is_builtin``      lives in ``extensions-builtin/``.
    ``enabled``         not listed in the ``disabled_extensions`` option (read at start).
    ``loaded``          active at this start: its files were imported (what failed is in ``errors``).
    ``remote``, ``branch``, ``commit_hash``, ``commit_date`` (unix seconds, int), ``version`` (commit_hash[:8]):
                        from git when the folder is a checkout, filled by :meth:`Extension.read_info_from_repo` (lazy,
                        as A1111; built-ins are not read). None / "" otherwise.
    ``status``, ``can_update``  for "Check for updates" (A1111's fields; set by whoever checks).
    ``errors``          list of :class:`ExtensionError` (``stage``: "preload", "script", "callback:<name>", "install";
                        ``file``; ``message``: one line "SyntaxError: ..."; ``traceback``): what failed and was skipped.
    ``scripts``         the ``scripts/*.py`` files imported; ``javascript`` the ``javascript/*.js`` files served;
                        ``stylesheet`` the ``style.css`` served, or None.

Nothing here runs at import (house rule 2); nothing is global: the set lives on AppState.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import traceback
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: The project's own built-in extensions folder (A1111 ``extensions_builtin_dir``), next to launch.py.
BUILTIN_DIRNAME = "extensions-builtin"


@dataclass
class ExtensionError:
    """One failure of one extension: which stage, which file, the one-line message and the traceback."""

    stage: str
    file: str | None
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        where = f" ({os.path.basename(self.file)})" if self.file else ""
        return f"{self.stage}{where}: {self.message}"

    @classmethod
    def from_exception(cls, stage: str, file: str | None, error: BaseException) -> "ExtensionError":
        return cls(stage=stage, file=file, message=f"{type(error).__name__}: {error}",
                   traceback="".join(traceback.format_exception(type(error), error, error.__traceback__)))


@dataclass
class Extension:
    """One extension folder (A1111 ``modules.extensions.Extension``); see the module docstring for each field."""

    name: str
    path: str
    is_builtin: bool = False
    enabled: bool = True
    loaded: bool = False
    remote: str | None = None
    branch: str | None = None
    commit_hash: str = ""
    commit_date: int | None = None
    version: str = ""
    status: str = ""
    can_update: bool = False
    errors: list[ExtensionError] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    javascript: list[str] = field(default_factory=list)
    stylesheet: str | None = None
    have_info_from_repo: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def report(self, stage: str, file: str | None, error: BaseException) -> ExtensionError:
        """Record a failure, log it naming the extension (console), and return the record. The same failure again
        (a callback failing at every denoiser step) is neither recorded nor logged at error level twice."""
        record = ExtensionError.from_exception(stage, file, error)
        if any((e.stage, e.file, e.message) == (record.stage, record.file, record.message) for e in self.errors):
            log.debug("Extension %s: %s failed again: %s", self.name, stage, record.message)
            return record
        self.errors.append(record)
        log.error("Extension %s: %s failed%s: %s\n%s", self.name, stage,
                  f" in {file}" if file else "", record.message, record.traceback.rstrip())
        return record

    def list_files(self, subdir: str, suffix: str) -> list[str]:
        """Files ``<path>/<subdir>/*<suffix>`` sorted by name (A1111 ``Extension.list_files``)."""
        folder = os.path.join(self.path, subdir)
        if not os.path.isdir(folder):
            return []
        return [os.path.join(folder, f) for f in sorted(os.listdir(folder))
                if f.lower().endswith(suffix) and os.path.isfile(os.path.join(folder, f))]

    def read_info_from_repo(self) -> None:
        """remote, branch, commit_hash, commit_date, version from the folder's git checkout (A1111 reads these with
        GitPython; we ask the ``git`` command). Built-ins and non-checkouts keep None/"". Read once."""
        if self.is_builtin or self.have_info_from_repo:
            return
        with self._lock:
            if self.have_info_from_repo:
                return
            if os.path.exists(os.path.join(self.path, ".git")):
                commit = _git(self.path, "rev-parse", "HEAD")
                if commit:
                    self.commit_hash = commit
                    self.version = commit[:8]
                    date = _git(self.path, "log", "-1", "--format=%ct")
                    self.commit_date = int(date) if date and date.isdigit() else None
                    self.branch = _git(self.path, "symbolic-ref", "--short", "-q", "HEAD") or None
                    self.remote = _git(self.path, "config", "--get", "remote.origin.url") or None
                    self.status = "unknown"
            self.have_info_from_repo = True


def _git(path: str, *args: str) -> str | None:
    """One local git command's output (never the network), or None when git or the repository is unusable."""
    try:
        out = subprocess.run(["git", "-C", path, *args], capture_output=True, text=True, timeout=10, check=True,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@dataclass
class ExtensionSet:
    """Every extension of this start and which of them are active (A1111 ``extensions.extensions`` / ``active()``)."""

    extensions_dir: str
    builtin_dir: str
    all: list[Extension] = field(default_factory=list)
    disable_all: bool = False  # --disable-all-extensions or option disable_all_extensions == "all"
    disable_extra: bool = False  # --disable-extra-extensions or option disable_all_extensions == "extra"

    @property
    def disabled_by(self) -> str | None:
        return "all" if self.disable_all else "extra" if self.disable_extra else None

    def active(self) -> list[Extension]:
        if self.disable_all:
            return []
        if self.disable_extra:
            return [e for e in self.all if e.enabled and e.is_builtin]
        return [e for e in self.all if e.enabled]

    def get(self, name: str) -> Extension | None:
        return next((e for e in self.all if e.name == name), None)

    def errors(self) -> dict[str, list[ExtensionError]]:
        """Extension name -> its failures, for the extensions that had any."""
        return {e.name: list(e.errors) for e in self.all if e.errors}


def builtin_extensions_dir(install_dir: str) -> str:
    return os.path.join(install_dir, BUILTIN_DIRNAME)


def list_extensions(extensions_dir: str, builtin_dir: str, *, disabled: list[str] | tuple[str, ...] = (),
                    disable_all: bool = False, disable_extra: bool = False) -> ExtensionSet:
    """A1111 1.10 ``list_extensions``: every folder of ``builtin_dir`` then of ``extensions_dir`` (hidden ones and
    files skipped), ``enabled`` unless its name is in ``disabled`` (the ``disabled_extensions`` option)."""
    found: list[Extension] = []
    for folder, is_builtin in ((builtin_dir, True), (extensions_dir, False)):
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.startswith(".") or name == "__pycache__" or not os.path.isdir(path):
                continue
            found.append(Extension(name=name, path=os.path.abspath(path), is_builtin=is_builtin,
                                   enabled=name not in set(disabled or ())))
    return ExtensionSet(extensions_dir=extensions_dir, builtin_dir=builtin_dir, all=found, disable_all=disable_all,
                        disable_extra=disable_extra)


def extension_switches(config, settings) -> tuple[list[str], bool, bool]:
    """(disabled names, disable all, disable extra) from the flags and the options, as A1111 1.10 reads them."""
    mode = settings.get("disable_all_extensions") if settings is not None else "none"
    disabled = list(settings.get("disabled_extensions") or []) if settings is not None else []
    disable_all = bool(config.disable_all_extensions) or mode == "all"
    disable_extra = not disable_all and (bool(config.disable_extra_extensions) or mode == "extra")
    return disabled, disable_all, disable_extra


def discover(config, settings) -> ExtensionSet:
    """The extensions of this start, from the config's folders and the options; logs A1111's notices."""
    disabled, disable_all, disable_extra = extension_switches(config, settings)
    if config.disable_all_extensions:
        log.warning('"--disable-all-extensions" was used: no extension is loaded')
    elif disable_all:
        log.warning('"Disable all extensions" option is set: no extension is loaded')
    elif config.disable_extra_extensions:
        log.warning('"--disable-extra-extensions" was used: only built-in extensions are loaded')
    elif disable_extra:
        log.warning('"Disable all extensions" option is "extra": only built-in extensions are loaded')
    return list_extensions(config.extensions_dir, builtin_extensions_dir(config.install_dir), disabled=disabled,
                           disable_all=disable_all, disable_extra=disable_extra)
