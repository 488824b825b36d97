"""Files on disk: the one atomic write and the one output-folder rule.

``atomic_write`` is how every file we write (images, config.json, styles CSV, the hash cache, merged checkpoints,
params.txt, tokenizer files) reaches the disk: a temporary file in the same folder, flushed and fsynced, then
``os.replace``d onto the target, so a reader or a killed process never sees half a file.

``output_dir`` is A1111's folder rule for generated images (``processing.py`` / ``postprocessing.py``):
``opts.outdir_samples or opts.outdir_<kind>_samples`` (grids: ``outdir_grids or outdir_<kind>_grids``), a relative
folder being under the data folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import IO, Any

#: What ``atomic_write`` writes: bytes, a str (encoded with ``encoding``), or ``write(f)`` given the open file.
Content = bytes | bytearray | memoryview | str | Callable[[IO[Any]], Any]


def atomic_write(path: str | os.PathLike[str], content: Content, *, encoding: str | None = None,
                 newline: str | None = None, keep_backup: bool = False) -> str:
    """Write ``content`` to ``path`` atomically and return the path (as a str).

    ``content`` is bytes, a str (written encoded with ``encoding``, utf-8 by default) or a function called with the
    open temporary file: a binary file, or a text file when ``encoding`` is given (``newline`` as ``open`` takes
    it). The temporary file ``.<name>.<random>.tmp`` lies in the target's folder (created when missing), gets the
    usual umask-based permissions (not mkstemp's 0600), is fsynced, then replaces ``path``; on any error it is
    removed and the old file is left as it was. ``keep_backup``: an existing ``path`` is first copied to
    ``<path>.bak`` (A1111 does so for styles.csv).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        if callable(content) and encoding is not None:
            f: IO[Any] = os.fdopen(fd, "w", encoding=encoding, newline=newline)
        else:
            f = os.fdopen(fd, "wb")
        with f:
            if callable(content):
                content(f)
            elif isinstance(content, str):
                f.write(content.encode(encoding or "utf-8"))
            else:
                f.write(content)
            f.flush()
            os.fsync(f.fileno())
        if keep_backup and os.path.exists(path):
            shutil.copy(path, f"{path}.bak")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def under_data_dir(folder: str | None, data_dir: str) -> str:
    """A folder option as a path: absolute as it is, relative (or empty) under ``data_dir`` (A1111's data path)."""
    folder = folder or ""
    return folder if os.path.isabs(folder) else os.path.join(data_dir, folder)


def output_dir(opts_get: Callable[[str], Any], kind: str, data_dir: str, *, grid: bool = False) -> str:
    """A1111's output folder for ``kind`` ("txt2img", "img2img", "extras"): option ``outdir_samples`` when set, else
    ``outdir_<kind>_samples``; with ``grid``, ``outdir_grids`` else ``outdir_<kind>_grids``. ``opts_get(key)`` reads
    an option (``settings.get`` or an effective per-request copy's); a relative folder is under ``data_dir``."""
    suffix = "grids" if grid else "samples"
    folder = opts_get(f"outdir_{suffix}") or opts_get(f"outdir_{kind}_{suffix}")
    return under_data_dir(folder, data_dir)
