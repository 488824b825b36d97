"""Checkpoint and VAE registries: what is on disk, under which names A1111 clients know it.

A1111 clients address a checkpoint by many spellings (``sd_model_checkpoint`` in options and override_settings,
infotext ``Model:``/``Model hash:``, ``/sdapi/v1/sd-models`` titles), so the registry keeps A1111's alias table
(``modules/sd_models.py: CheckpointInfo.ids``) and its scan order (``modules/modelloader.py: load_models`` +
``modules/util.py: walk_files``). Full sha256 hashes are expensive (gigabytes per file), so, like A1111, they are
read from ``cache.json`` when the file's mtime still matches and computed only on demand (``ensure_hash``, called
when a checkpoint is loaded). The cache file keeps A1111's layout so an existing A1111 ``cache.json`` is reused.

Nothing here runs at import time and nothing is global: ``AppState`` owns one ``HashCache``, one
``CheckpointRegistry`` and one ``VaeRegistry``.
"""

from __future__ import annotations

import builtins
import dataclasses
import glob
import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Iterable

from webui.core.io.files import atomic_write
from webui.core.types import CheckpointInfo

logger = logging.getLogger(__name__)

CHECKPOINT_EXTENSIONS = (".ckpt", ".safetensors")
# A1111 list_models: ext_blacklist=[".vae.ckpt", ".vae.safetensors"] (VAE files living beside checkpoints).
CHECKPOINT_EXCLUDED_SUFFIXES = (".vae.ckpt", ".vae.safetensors")
# A1111 sd_vae.refresh_vae_list: patterns in checkpoint folders vs. in VAE folders.
VAE_PATTERNS_IN_CHECKPOINT_DIRS = ("**/*.vae.ckpt", "**/*.vae.pt", "**/*.vae.safetensors")
VAE_PATTERNS_IN_VAE_DIRS = ("**/*.ckpt", "**/*.pt", "**/*.safetensors")

HASH_BLOCK_SIZE = 1024 * 1024  # A1111 hashes.calculate_sha256 blksize
_RE_STRIP_CHECKSUM = re.compile(r"\s*\[[^]]+]\s*$")  # A1111 sd_models.re_strip_checksum
_RE_DIGITS = re.compile(r"([0-9]+)")


def natural_sort_key(s: str) -> list:
    """A1111's ``natural_sort_key``: digit runs compare as numbers, the rest case-insensitively."""
    return [int(text) if text.isdigit() else text.lower() for text in _RE_DIGITS.split(s)]


def calculate_sha256(filename: str | os.PathLike) -> str:
    """Full-file sha256 in 1 MiB blocks (A1111 ``hashes.calculate_sha256``); never holds the file in memory."""
    h = hashlib.sha256()
    with open(filename, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_BLOCK_SIZE), b""):
            h.update(chunk)
    return h.hexdigest()


def model_hash(filename: str | os.PathLike) -> str:
    """A1111's old 8-hex "model hash": sha256 of the 64 KiB at offset 1 MiB.

    Collision-prone, but old infotexts and API clients still send it (``Model hash: 7460a6fa`` and
    ``name [7460a6fa]``), so it stays an alias. It reads 64 KiB, so computing it during a scan is cheap.
    """
    try:
        with open(filename, "rb") as file:
            m = hashlib.sha256()
            file.seek(0x100000)
            m.update(file.read(0x10000))
            return m.hexdigest()[0:8]
    except FileNotFoundError:
        return "NOFILE"


class HashCache:
    """sha256 cache in A1111's ``cache.json`` shape: ``{"hashes": {"checkpoint/<name>": {"mtime", "sha256"}}}``.

    Other sections (``hashes-addnet``, ``safetensors-metadata``, ...) are kept as read and written back untouched,
    so A1111 and this server can share one file. ``path=None`` keeps the cache in memory only (tests, or when no
    data dir is writable).

    Thread-safe: the queue worker (hashing a checkpoint it loads) and request threads (listing models) may call it
    at once. The lock guards only the dict and the file write; the hashing itself runs outside it, with one
    in-flight lock per title so two threads never hash the same multi-gigabyte file twice.
    """

    SECTION = "hashes"

    def __init__(self, path: str | os.PathLike | None):
        self.path = os.fspath(path) if path is not None else None
        self._lock = threading.RLock()
        self._data: dict | None = None
        self._inflight: dict[str, threading.Lock] = {}

    # -- file -------------------------------------------------------------------------------------------------
    def _load(self) -> dict:
        """Read the file once, lazily (no I/O in ``__init__``); a corrupt file is set aside, as A1111 does."""
        with self._lock:
            if self._data is not None:
                return self._data
            data: dict = {}
            if self.path is not None:
                try:
                    with open(self.path, encoding="utf8") as f:
                        data = json.load(f)
                    if not isinstance(data, dict):
                        raise ValueError("top level is not an object")
                except FileNotFoundError:
                    data = {}
                except (OSError, ValueError) as e:
                    backup = self.path + ".bad"
                    logger.error("cannot read hash cache %s (%s); moved it to %s and starting empty", self.path, e, backup)
                    try:
                        os.replace(self.path, backup)
                    except OSError:
                        pass
                    data = {}
            self._data = data
            return data

    def _section(self) -> dict:
        data = self._load()
        section = data.get(self.SECTION)
        if not isinstance(section, dict):
            section = {}
            data[self.SECTION] = section
        return section

    def _dump(self) -> None:
        """Write atomically (``atomic_write``) so a crash never leaves half a JSON."""
        if self.path is None:
            return
        with self._lock:
            atomic_write(self.path, lambda f: json.dump(self._data, f, indent=4, ensure_ascii=False), encoding="utf8")

    # -- lookups ----------------------------------------------------------------------------------------------
    def sha256_from_cache(self, filename: str | os.PathLike, title: str) -> str | None:
        """The cached sha256 if the entry's mtime equals the file's current mtime, else None (never hashes).

        A1111 treats only a *newer* file as stale; we re-hash on any mtime change (a file replaced by an older
        copy is a different file too). Entries A1111 wrote still match, since both store ``os.path.getmtime``.
        """
        try:
            ondisk_mtime = os.path.getmtime(filename)
        except OSError:
            return None
        with self._lock:
            entry = self._section().get(title)
            if not isinstance(entry, dict):
                return None
            cached = entry.get("sha256")
            if not cached or entry.get("mtime", 0) != ondisk_mtime:
                return None
            return cached

    def sha256(self, filename: str | os.PathLike, title: str) -> str:
        """Cached sha256, or compute it (1 MiB blocks), store it under ``title`` and write the file."""
        cached = self.sha256_from_cache(filename, title)
        if cached is not None:
            return cached
        with self._lock:
            inflight = self._inflight.setdefault(title, threading.Lock())
        with inflight:
            # Another thread may have finished hashing this file while we waited.
            cached = self.sha256_from_cache(filename, title)
            if cached is not None:
                return cached
            # mtime taken *before* hashing: if the file changes while we read it, the stored mtime is stale and
            # the next lookup re-hashes instead of trusting a hash of half-old content.
            try:
                mtime = os.path.getmtime(filename)
                logger.info("Calculating sha256 for %s", filename)
                value = calculate_sha256(filename)
                with self._lock:
                    self._section()[title] = {"mtime": mtime, "sha256": value}
                    try:
                        self._dump()
                    except OSError as e:  # a read-only data dir must not fail the load that needed the hash
                        logger.warning("cannot write hash cache %s: %s", self.path, e)
            finally:
                with self._lock:
                    self._inflight.pop(title, None)
            return value


class CheckpointNotFound(KeyError):
    """An unknown checkpoint name; the message starts like A1111's ("model 'x' not found") and lists the titles."""

    def __init__(self, name: str, choices: Iterable[str]):
        self.name = name
        self.choices = builtins.list(choices)
        listed = ", ".join(self.choices) if self.choices else "(no checkpoints found)"
        super().__init__(f"model {name!r} not found; available: {listed}")

    def __str__(self) -> str:  # KeyError would repr() the message, adding quotes
        return str(self.args[0])


def _inside(path: str, folder: str) -> str | None:
    """``path`` relative to ``folder`` if it lies inside it, else None (both absolute)."""
    try:
        rel = os.path.relpath(path, folder)
    except ValueError:  # different drives on Windows
        return None
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        return None
    return rel


def _walk_files(folder: str, extensions: Iterable[str]) -> Iterable[str]:
    """A1111 ``util.walk_files``: folders in natural order of their path, files in natural order inside each."""
    if not os.path.isdir(folder):
        return
    allowed = {e.lower() for e in extensions}
    items = sorted(os.walk(folder, followlinks=True), key=lambda x: natural_sort_key(x[0]))
    for root, _dirs, files in items:
        for filename in sorted(files, key=natural_sort_key):
            if os.path.splitext(filename)[1].lower() in allowed:
                yield os.path.join(root, filename)


class CheckpointRegistry:
    """The checkpoint list of ``/sdapi/v1/sd-models`` and A1111's alias table for ``sd_model_checkpoint``.

    ``checkpoints_dir`` is ``models/Stable-diffusion``; ``extra_dirs`` are ``--ckpt-dir`` folders, scanned first and
    used first for relative names, as A1111 does; ``ckpt_file`` is ``--ckpt``, listed first. ``refresh()`` must be
    called to scan (the constructor does no I/O).
    """

    def __init__(
        self,
        checkpoints_dir: str | os.PathLike,
        extra_dirs: Iterable[str | os.PathLike] = (),
        ckpt_file: str | os.PathLike | None = None,
        hash_cache: HashCache | None = None,
        no_hashing: bool = False,
    ):
        self.checkpoints_dir = os.path.abspath(checkpoints_dir)
        self.extra_dirs = tuple(os.path.abspath(d) for d in extra_dirs)
        self.ckpt_file = os.path.abspath(ckpt_file) if ckpt_file is not None else None
        self.hash_cache = hash_cache if hash_cache is not None else HashCache(None)
        self.no_hashing = no_hashing
        self._lock = threading.RLock()
        self._by_title: dict[str, CheckpointInfo] = {}  # A1111 checkpoints_list (ordered)
        self._aliases: dict[str, CheckpointInfo] = {}  # A1111 checkpoint_aliases
        self._old_hash: dict[str, str] = {}  # filename -> 8-hex old hash

    # -- scanning ---------------------------------------------------------------------------------------------
    def _discover(self) -> builtins.list[str]:
        """A1111 ``modelloader.load_models``: ``--ckpt-dir`` first, then the models folder, duplicates dropped."""
        output: builtins.list[str] = []
        seen: set[str] = set()
        places = [d for d in self.extra_dirs if d != self.checkpoints_dir] + [self.checkpoints_dir]
        for place in places:
            for path in _walk_files(place, CHECKPOINT_EXTENSIONS):
                if os.path.islink(path) and not os.path.exists(path):
                    logger.warning("Skipping broken symlink: %s", path)
                    continue
                if path.lower().endswith(CHECKPOINT_EXCLUDED_SUFFIXES):
                    continue
                if path not in seen:
                    seen.add(path)
                    output.append(path)
        return output

    def _name_for(self, filename: str) -> str:
        """Relative to the first folder containing it (``--ckpt-dir`` before models), else the bare file name."""
        for folder in (*self.extra_dirs, self.checkpoints_dir):
            rel = _inside(filename, folder)
            if rel is not None:
                return rel
        return os.path.basename(filename)

    @staticmethod
    def _make_info(filename: str, name: str, sha256: str | None) -> CheckpointInfo:
        model_name = os.path.splitext(name.replace("/", "_").replace("\\", "_"))[0]
        config = os.path.splitext(filename)[0] + ".yaml"  # A1111 find_checkpoint_config_near_filename
        return CheckpointInfo(
            filename=filename,
            name=name,
            model_name=model_name,
            sha256=sha256,
            config=config if os.path.exists(config) else None,
        )

    def _ids(self, info: CheckpointInfo) -> builtins.list[str]:
        """A1111 ``CheckpointInfo.ids``, in its order (later registrations win alias collisions, as in A1111)."""
        old = self._old_hash.get(info.filename) or model_hash(info.filename)
        ids = [old, info.model_name, info.title, info.name, info.stem, f"{info.name} [{old}]"]
        if info.sha256:
            ids += [info.shorthash, info.sha256, f"{info.name} [{info.shorthash}]", f"{info.stem} [{info.shorthash}]"]
        return ids

    def _register(self, info: CheckpointInfo) -> None:
        self._by_title[info.title] = info
        for alias in self._ids(info):
            self._aliases[alias] = info

    def refresh(self) -> builtins.list[CheckpointInfo]:
        """Rescan the folders (``/sdapi/v1/refresh-checkpoints``); hashes come from the cache only, never computed.

        Order is A1111's: the ``--ckpt`` file first (if it exists), then discovery order.
        """
        files: builtins.list[str] = []
        if self.ckpt_file is not None:
            if os.path.exists(self.ckpt_file):
                files.append(self.ckpt_file)
            else:
                logger.warning("Checkpoint in --ckpt argument not found: %s", self.ckpt_file)
        files += self._discover()

        infos = []
        old_hashes = {}
        for filename in files:
            name = self._name_for(filename)
            sha = self.hash_cache.sha256_from_cache(filename, f"checkpoint/{name}")
            infos.append(self._make_info(filename, name, sha))
            old_hashes[filename] = model_hash(filename)

        with self._lock:
            self._by_title = {}
            self._aliases = {}
            self._old_hash = old_hashes
            for info in infos:
                self._register(info)
            return builtins.list(self._by_title.values())

    # -- queries ----------------------------------------------------------------------------------------------
    def list(self) -> builtins.list[CheckpointInfo]:
        """Checkpoints in ``/sdapi/v1/sd-models`` order (as of the last ``refresh``)."""
        with self._lock:
            return builtins.list(self._by_title.values())

    def titles(self) -> builtins.list[str]:
        """A1111 ``checkpoint_tiles()``: the values ``sd_model_checkpoint`` is normalised to, in list order."""
        with self._lock:
            return builtins.list(self._by_title)

    def resolve(self, name: str | None) -> CheckpointInfo | None:
        """Exact A1111 alias lookup (``checkpoint_aliases``): title ``name [hash10]``, relative file name, file
        stem, model_name, 10-hex short hash, full sha256, ``stem [hash10]``, the old 8-hex hash and
        ``name [hash8]``. This is what ``POST /options`` accepts for ``sd_model_checkpoint``."""
        if not name:
            return None
        with self._lock:
            return self._aliases.get(name)

    def closest(self, name: str | None) -> CheckpointInfo | None:
        """A1111 ``get_closet_checkpoint_match``: an exact alias, else the shortest title containing ``name``,
        else the same with a trailing `` [hash]`` stripped (so a stale hash in an infotext still finds the file)."""
        if not name:
            return None
        with self._lock:
            exact = self._aliases.get(name)
            if exact is not None:
                return exact
            infos = builtins.list(self._by_title.values())
        for needle in (name, _RE_STRIP_CHECKSUM.sub("", name)):
            # sorted() is stable: among equal lengths the earlier-listed checkpoint wins, as in A1111.
            found = sorted((i for i in infos if needle in i.title), key=lambda i: len(i.title))
            if found:
                return found[0]
        return None

    def get_or_raise(self, name: str) -> CheckpointInfo:
        """``resolve`` or raise ``CheckpointNotFound`` listing the valid titles (house rule: fail with choices)."""
        info = self.resolve(name)
        if info is None:
            raise CheckpointNotFound(name, self.titles())
        return info

    # -- hashing ----------------------------------------------------------------------------------------------
    def ensure_hash(self, info: CheckpointInfo) -> CheckpointInfo:
        """A1111 ``CheckpointInfo.calculate_shorthash``: make sure ``info`` has its sha256 (computing and caching it
        unless ``no_hashing``), retitle it in place (same list position) and register the hash aliases.

        Returns the up-to-date frozen info; with ``no_hashing`` and nothing cached it is returned without hash.
        """
        title_key = f"checkpoint/{info.name}"
        if self.no_hashing:
            sha = self.hash_cache.sha256_from_cache(info.filename, title_key)
        else:
            sha = self.hash_cache.sha256(info.filename, title_key)

        with self._lock:
            current = next((i for i in self._by_title.values() if i.filename == info.filename), None)
            base = current if current is not None else info
            if sha is None or base.sha256 == sha:
                return base
            new = dataclasses.replace(base, sha256=sha)
            if current is None:
                return new  # not (or no longer) listed: hand back the hashed info, don't list it
            # A1111 replace_key: the retitled entry keeps its position in the list.
            self._by_title = {
                (new.title if k == current.title else k): (new if k == current.title else v)
                for k, v in self._by_title.items()
            }
            for alias, target in builtins.list(self._aliases.items()):
                if target is current:
                    self._aliases[alias] = new
            self._register(new)
            return new


@dataclass(frozen=True)
class VaeInfo:
    """One entry of ``/sdapi/v1/sd-vae``: ``model_name`` (file name with extension, what ``sd_vae`` accepts) and
    the absolute ``filename``."""

    model_name: str
    filename: str


class VaeRegistry:
    """The VAE list of ``/sdapi/v1/sd-vae`` (A1111 ``sd_vae.refresh_vae_list``).

    ``*.vae.{ckpt,pt,safetensors}`` under ``checkpoints_dir`` and ``extra_dirs`` (``--ckpt-dir``), any
    ``*.{ckpt,pt,safetensors}`` under ``vae_dir`` and ``extra_vae_dirs`` (``--vae-dir``). Keyed by file name:
    when two folders hold the same name the later source wins (A1111's dict assignment), sources in A1111's order
    (models/Stable-diffusion, models/VAE, --ckpt-dir, --vae-dir). Listed in natural order of the name, which is
    what A1111 intends (its ``dict.update`` with a sorted copy does not actually reorder; we sort for real so the
    list is deterministic).
    """

    def __init__(
        self,
        vae_dir: str | os.PathLike,
        checkpoints_dir: str | os.PathLike,
        extra_dirs: Iterable[str | os.PathLike] = (),
        extra_vae_dirs: Iterable[str | os.PathLike] = (),
    ):
        self.vae_dir = os.path.abspath(vae_dir)
        self.checkpoints_dir = os.path.abspath(checkpoints_dir)
        self.extra_dirs = tuple(os.path.abspath(d) for d in extra_dirs)
        self.extra_vae_dirs = tuple(os.path.abspath(d) for d in extra_vae_dirs)
        self._lock = threading.RLock()
        self._by_name: dict[str, VaeInfo] = {}

    def refresh(self) -> builtins.list[VaeInfo]:
        """Rescan (``/sdapi/v1/refresh-vae``)."""
        sources = [(self.checkpoints_dir, VAE_PATTERNS_IN_CHECKPOINT_DIRS), (self.vae_dir, VAE_PATTERNS_IN_VAE_DIRS)]
        sources += [(d, VAE_PATTERNS_IN_CHECKPOINT_DIRS) for d in self.extra_dirs]
        sources += [(d, VAE_PATTERNS_IN_VAE_DIRS) for d in self.extra_vae_dirs]
        found: dict[str, str] = {}
        for folder, patterns in sources:
            if not os.path.isdir(folder):
                continue
            for pattern in patterns:
                # glob skips dot-files and dot-folders, as A1111's glob does; sorted so duplicates resolve the same
                # way on every file system.
                paths = glob.glob(os.path.join(glob.escape(folder), pattern), recursive=True)
                for path in sorted(paths, key=natural_sort_key):
                    if os.path.isfile(path):
                        found[os.path.basename(path)] = os.path.abspath(path)
        ordered = {name: VaeInfo(name, found[name]) for name in sorted(found, key=natural_sort_key)}
        with self._lock:
            self._by_name = ordered
            return builtins.list(ordered.values())

    def list(self) -> builtins.list[VaeInfo]:
        with self._lock:
            return builtins.list(self._by_name.values())

    def names(self) -> builtins.list[str]:
        """The ``sd_vae`` choices besides ``Automatic`` and ``None`` (which the caller handles)."""
        with self._lock:
            return builtins.list(self._by_name)

    def resolve(self, name: str | None) -> VaeInfo | None:
        """By ``model_name`` (A1111 ``vae_dict.get``), or by the absolute file name."""
        if not name:
            return None
        with self._lock:
            info = self._by_name.get(name)
            if info is None:
                info = next((i for i in self._by_name.values() if i.filename == name), None)
            return info

    def near_checkpoint(self, checkpoint_filename: str | os.PathLike) -> VaeInfo | None:
        """A1111 ``find_vae_near_checkpoint`` for ``sd_vae = Automatic``: the first listed VAE whose file name
        *starts with* the checkpoint's stem. A1111 matches by prefix over the whole list, not only ``<stem>.vae.*``
        beside the file; we copy that, since users rely on e.g. ``model.vae.pt`` and ``model-vae.safetensors``."""
        stem = os.path.basename(os.fspath(checkpoint_filename)).rsplit(".", 1)[0]
        with self._lock:
            for info in self._by_name.values():
                if info.model_name.startswith(stem):
                    return info
        return None
