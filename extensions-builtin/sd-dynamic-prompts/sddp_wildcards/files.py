"""The wildcard files of the Dynamic Prompts wildcards folder, for the Wildcards Manager tab: list them under the
names the ``dynamicprompts`` library gives them, read one, save (atomically), delete, delete all, copy a collection.

No gradio here (the tab in :mod:`sddp_wildcards.tab` is a thin adapter), so the operations are tested on their own.

Names are the library's own: the list comes from ``WildcardManager(folder).tree``, the same walk that generation
does, so what the tab shows under ``__name__`` is what a prompt's ``__name__`` finds. A ``.txt`` file
``animals/pets.txt`` is ``animals/pets``; a key ``colors: {warm: [...]}`` of ``sub/styles.yaml`` is ``sub/colors/warm``
(the file's own name is not part of it, as in the library), and a ``.yaml`` / ``.json`` file whose top level is a
list is ``sub/<file stem>``.

Every path a request names is relative to the wildcards folder and checked first (:func:`resolve`): absolute
paths, ``..``, folders the library skips (a leading ``.``), links that lead outside the folder and suffixes the
library does not read are refused with a :class:`WildcardFileError` whose message says why.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path, PurePosixPath

#: the suffixes dynamicprompts 0.31 reads (wildcards/tree/build.py); ``.yml`` is not among them
SUFFIXES = (".txt", ".yaml", ".json")
ENCODING = "utf-8"  # dynamicprompts.constants.DEFAULT_ENCODING


class WildcardFileError(ValueError):
    """A refused request; its message is for the user."""


@dataclasses.dataclass(frozen=True)
class Wildcard:
    """One wildcard as the library sees it."""

    name: str  # "animals/pets", used in a prompt as __animals/pets__
    file: str  # its file, relative to the wildcards folder, "/"-separated: "animals/pets.txt"
    key: str  # the key path inside a .yaml/.json file ("colors/warm"); "" for .txt and top-level-list files
    count: int  # how many values it has


def list_wildcards(folder: Path) -> list[Wildcard]:
    """Every wildcard of ``folder``, sorted by name (the library's walk; a missing folder has none)."""
    from dynamicprompts.wildcards import WildcardManager
    from dynamicprompts.wildcards.collection import WildcardTextFile

    folder = Path(folder)
    if not folder.is_dir():
        return []
    result = []
    for name, collection in sorted(WildcardManager(folder).tree.map.items()):
        if isinstance(collection, WildcardTextFile):
            file, key = f"{name}.txt", ""  # the library names a text file by its path without the suffix
        else:
            source = getattr(collection, "source", None)  # ListWildcardCollection: (path, key) or path
            path, key = source if isinstance(source, tuple) else (source, "")
            if path is None:
                continue
            file = Path(path).relative_to(folder).as_posix()
        result.append(Wildcard(name, file, key, len(list(collection.get_values()))))
    return result


def unread_files(folder: Path) -> list[str]:
    """``.yml`` files of ``folder``: the library does not read them (only ``.yaml``), so the tab says so."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for dirname, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [(Path(dirname) / f).relative_to(folder).as_posix() for f in sorted(filenames) if f.endswith(".yml")]
    return found


def resolve(folder: Path, file: str) -> tuple[Path, str]:
    """``(absolute path, normalised relative name)`` of ``file`` inside ``folder``, or a WildcardFileError saying
    why not. A name without a suffix is a ``.txt`` file (``animals/pets`` -> ``animals/pets.txt``)."""
    text = (file or "").strip().replace("\\", "/")  # a Windows-style separator must not hide a ".."
    if not text:
        raise WildcardFileError("Name the wildcard file first (for example animals/pets.txt).")
    pure = PurePosixPath(text)
    if pure.is_absolute() or (len(text) > 1 and text[1] == ":"):
        raise WildcardFileError(f"{file!r} is refused: give a path inside the wildcards folder, relative to it "
                                "(for example animals/pets.txt).")
    if ".." in pure.parts:
        raise WildcardFileError(f"{file!r} is refused: names with '..' could leave the wildcards folder.")
    if any(part.startswith(".") for part in pure.parts[:-1]):
        raise WildcardFileError(f"{file!r} is refused: the dynamicprompts library skips folders whose name starts "
                                "with '.', so its wildcards would never be used.")
    if pure.name.startswith("."):
        raise WildcardFileError(f"{file!r} is refused: a wildcard file's name cannot start with '.'.")
    if not pure.suffix:
        pure = pure.with_name(pure.name + ".txt")
    suffix = pure.suffix.lower()
    if suffix == ".yml":
        raise WildcardFileError(f"{file!r} is refused: the dynamicprompts library reads .yaml files, not .yml; "
                                "name it .yaml.")
    if pure.suffix not in SUFFIXES:
        raise WildcardFileError(f"{file!r} is refused: wildcard files are .txt (one value per line), .yaml or "
                                f".json, not {pure.suffix}.")
    if not pure.stem:
        raise WildcardFileError(f"{file!r} is refused: the file needs a name before {pure.suffix}.")
    root = Path(folder).resolve()
    path = (root / pure).resolve()  # links followed: one that leads outside the folder is refused too
    if not path.is_relative_to(root):
        raise WildcardFileError(f"{file!r} is refused: it leads outside the wildcards folder {root}.")
    return root / pure, pure.as_posix()


def wildcard_names(folder: Path, file: str, key: str = "") -> list[str]:
    """The names of the wildcards that ``file`` (and ``key`` inside it) defines now."""
    _, rel = resolve(folder, file)
    key = _clean_key(key)
    return [w.name for w in list_wildcards(folder)
            if w.file == rel and (not key or w.key == key or w.key.startswith(key + "/"))]


def read(folder: Path, file: str, key: str = "") -> str:
    """The text to edit: a ``.txt`` file's lines as they are; for ``.yaml`` / ``.json`` the whole file as written
    (no key) or the subtree under ``key`` (``colors/warm``) in the file's format. A file not there yet is ''."""
    path, rel = resolve(folder, file)
    key = _clean_key(key)
    if path.suffix == ".txt" and key:
        raise WildcardFileError(f"{rel} is a text file: it has no keys (leave Key empty).")
    if not path.is_file():
        return ""
    text = path.read_text(encoding=ENCODING, errors="ignore")
    if not key:
        return text
    data = _load(path, text)
    node = data
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            return ""  # a key not there yet: an empty editor to write it
        node = node[part]
    return _dump(path, node)


def save(folder: Path, file: str, text: str, key: str = "") -> str:
    """Write ``text`` to ``file`` atomically (a temporary file in the same folder, then a rename): a ``.txt`` as
    lines; a ``.yaml`` / ``.json`` as a whole file (it must parse) or, with ``key``, as the value under that key
    (the rest of the file kept; the file is then written back by the YAML / JSON writer, which drops YAML
    comments). Returns the relative file name."""
    path, rel = resolve(folder, file)
    key = _clean_key(key)
    text = text or ""
    if path.suffix == ".txt":
        if key:
            raise WildcardFileError(f"{rel} is a text file: it has no keys (leave Key empty).")
        lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
        while lines and not lines[-1]:
            lines.pop()
        _write_atomic(path, "\n".join(lines) + "\n" if lines else "")
        return rel
    value = _parse(rel, path, text)
    if not key:
        _write_atomic(path, text if text.endswith("\n") or not text else text + "\n")
        return rel
    if not isinstance(value, (str, list, dict)):
        raise WildcardFileError(f"The value for {key} must be a list of values, one value or a mapping of keys.")
    data = _load(path, path.read_text(encoding=ENCODING, errors="ignore")) if path.is_file() else {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WildcardFileError(f"{rel} is one list of values, not a mapping of keys: leave Key empty to edit it.")
    node = data
    parts = key.split("/")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise WildcardFileError(f"{part} in {rel} holds values, not keys: {key} cannot go under it.")
        node = child
    node[parts[-1]] = value
    _write_atomic(path, _dump(path, data))
    return rel


def delete(folder: Path, file: str, key: str = "") -> str:
    """Delete ``file`` (no key) or only ``key`` inside a ``.yaml`` / ``.json`` file (the file goes when nothing is
    left). Folders left empty go too. Returns what was deleted, for the message."""
    path, rel = resolve(folder, file)
    key = _clean_key(key)
    if not path.is_file():
        raise WildcardFileError(f"{rel} does not exist in the wildcards folder.")
    if key and path.suffix != ".txt":
        data = _load(path, path.read_text(encoding=ENCODING, errors="ignore"))
        parts = key.split("/")
        chain = [data]
        for part in parts:
            if not isinstance(chain[-1], dict) or part not in chain[-1]:
                raise WildcardFileError(f"{rel} has no key {key}.")
            chain.append(chain[-1][part])
        del chain[-2][parts[-1]]
        for depth in range(len(parts) - 1, 0, -1):  # mappings left empty go with it
            if chain[depth] == {}:
                del chain[depth - 1][parts[depth - 1]]
        if data:
            _write_atomic(path, _dump(path, data))
            return f"{key} of {rel}"
    elif key:
        raise WildcardFileError(f"{rel} is a text file: it has no keys (leave Key empty).")
    path.unlink()
    _prune(path.parent, Path(folder).resolve())
    return rel


def delete_all(folder: Path) -> int:
    """Delete every wildcard file (``.txt``, ``.yaml``, ``.json``) under ``folder`` and the folders left empty;
    other files (a README) stay. Returns how many files went."""
    root = Path(folder).resolve()
    if not root.is_dir():
        return 0
    count = 0
    # links are not followed here: a linked folder's files belong to somewhere else
    for dirname, dirnames, filenames in os.walk(root, topdown=False):
        here = Path(dirname)
        if any(part.startswith(".") for part in here.relative_to(root).parts):
            continue
        for name in filenames:
            if Path(name).suffix in SUFFIXES:
                (here / name).unlink()
                count += 1
        if here != root and not any(here.iterdir()):
            here.rmdir()
    return count


# -- collections ------------------------------------------------------------------------------------------------

def collection_roots(extension_dir: Path, extension_dirs: list[Path], extra: str = "") -> list[Path]:
    """Folders that hold collections (each subfolder one collection, as the original's ``collections/``): this
    extension's ``collections/`` (none is shipped here), the ``collections/`` of an installed copy of the real
    sd-dynamic-prompts (a folder of ``extension_dirs`` with its ``sd_dynamic_prompts`` package) and ``extra``, a
    folder the user names. Only those that exist."""
    candidates = [Path(extension_dir) / "collections"]
    for parent in extension_dirs:
        parent = Path(parent)
        if parent.is_dir():
            candidates += [d / "collections" for d in sorted(parent.iterdir())
                           if (d / "sd_dynamic_prompts").is_dir()]
    if extra and extra.strip():
        candidates.append(Path(extra.strip()).expanduser())
    seen, roots = set(), []
    for c in candidates:
        if c.is_dir() and c.resolve() not in seen:
            seen.add(c.resolve())
            roots.append(c)
    return roots


def collections(roots: list[Path]) -> dict[str, Path]:
    """``{label: folder}`` of every collection of ``roots``; the label is the collection's name, with its root when
    two roots have one of that name."""
    found: list[tuple[str, Path]] = [(d.name, d) for root in roots for d in sorted(Path(root).iterdir())
                                     if d.is_dir() and not d.name.startswith(".")]
    names = [n for n, _ in found]
    return {(n if names.count(n) == 1 else f"{n} ({d.parent})"): d for n, d in found}


def copy_collection(source: Path, folder: Path, overwrite: bool = False) -> tuple[int, int]:
    """Copy collection ``source``'s wildcard files into ``folder/<its name>/`` (the original's copy: existing files
    kept unless ``overwrite``). Only ``.txt`` / ``.yaml`` / ``.json`` files are copied. Returns (copied,
    kept)."""
    source = Path(source)
    copied = kept = 0
    for path in sorted(source.rglob("*")):
        inner = path.relative_to(source)
        if not path.is_file() or path.suffix not in SUFFIXES or any(p.startswith(".") for p in inner.parts[:-1]):
            continue  # what the library would not read
        rel = (PurePosixPath(source.name) / inner.as_posix()).as_posix()
        target, _ = resolve(folder, rel)
        if target.exists() and not overwrite:
            kept += 1
            continue
        _write_atomic(target, path.read_bytes())
        copied += 1
    return copied, kept


# -- helpers -------------------------------------------------------------------------------------------------------

def _clean_key(key: str) -> str:
    return "/".join(part.strip() for part in (key or "").strip().strip("/").split("/") if part.strip())


def _parse(rel: str, path: Path, text: str, what: str = "Not saved: the text"):
    """The YAML / JSON value of ``text``, or a WildcardFileError naming the problem."""
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except ValueError as e:
            raise WildcardFileError(f"{what} is not valid JSON for {rel} ({e}).") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise WildcardFileError(f"{what} is not valid YAML for {rel} ({e}).") from None


def _load(path: Path, text: str):
    """A stored file's value; an unreadable one is said so (it is not changed)."""
    return _parse(path.name, path, text, what=f"The file {path.name}")


def _dump(path: Path, value) -> str:
    if path.suffix == ".json":
        return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    import yaml

    text = yaml.safe_dump(value, allow_unicode=True, sort_keys=False, default_flow_style=False)
    # a lone scalar comes with YAML's end-of-document marker, which only clutters the editor
    return text[:-4] if text.endswith("\n...\n") else text


def _write_atomic(path: Path, data: str | bytes) -> None:
    """Write through a temporary file in the same folder, then rename it over ``path``: a generation reading the
    folder at that moment sees the old file or the new one, never half of it. The temporary name (a leading '.',
    suffix ``.tmp``) is not a wildcard file, so the library never reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode(ENCODING) if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _prune(directory: Path, root: Path) -> None:
    """Remove ``directory`` and its parents while they are empty, never ``root``."""
    directory = directory.resolve()
    while directory != root and directory.is_relative_to(root):
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


__all__ = ["SUFFIXES", "Wildcard", "WildcardFileError", "collection_roots", "collections", "copy_collection", "delete",
           "delete_all", "list_wildcards", "read", "resolve", "save", "unread_files", "wildcard_names"]
