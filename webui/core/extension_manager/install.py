"""Installing an extension from a git URL (A1111 ``ui_extensions.install_extension_from_url``), with A1111's rules
and messages: refused when extension access is disabled (``--listen``, ``--share``, ``--ngrok`` or
``--server-name`` without ``--enable-insecure-extension-access``), an empty URL, an existing folder, a URL already
installed; cloned into ``<data>/tmp/<name>`` first and moved into ``extensions/`` only when the clone succeeded.
"""

from __future__ import annotations

import errno
import os
import shutil

from webui.core.extension_manager import git

#: A1111 check_access's message (an AssertionError there; an ExtensionAccessDenied here, answered as a refusal)
ACCESS_DISABLED = "extension access disabled because of command line flags"


class ExtensionAccessDenied(PermissionError):
    """A1111 check_access: installing, updating, enabling/disabling and restoring extensions is not allowed on an
    instance reachable from other machines unless --enable-insecure-extension-access was given."""

    def __init__(self) -> None:
        super().__init__(ACCESS_DISABLED)


class InstallError(ValueError):
    """The install cannot be done as asked (no URL, the folder exists, already installed, git failed)."""


def check_access(access_disabled: bool) -> None:
    if access_disabled:
        raise ExtensionAccessDenied()


def normalize_git_url(url: str | None) -> str:
    """A1111 normalize_git_url: ".git" removed, for comparing remotes."""
    if url is None:
        return ""
    return url.replace(".git", "")


def dirname_from_url(url: str) -> str:
    """A1111 get_extension_dirname_from_url: the URL's last path part without ".git"."""
    *_parts, last_part = url.rstrip("/").split("/")
    return normalize_git_url(last_part)


def install_from_url(url: str, *, extensions_dir: str, tmp_root: str, installed_remotes, access_disabled: bool,
                     dirname: str | None = None, branch: str | None = None) -> str:
    """Clone ``url`` (its ``branch``, else the default one) into ``extensions_dir/<dirname>``; return that folder.

    ``installed_remotes``: the remotes of the installed extensions (an already installed URL is refused, as A1111).
    Unlike A1111, ``dirname`` must be a plain folder name: "../x" or "a/b" would write outside extensions/.
    Nothing of the extension runs here (its install.py included: see the README on installers).
    """
    check_access(access_disabled)
    dirname = dirname.strip() if isinstance(dirname, str) else dirname
    url = url.strip() if isinstance(url, str) else url
    branch = branch.strip() if isinstance(branch, str) else branch
    if not url:
        raise InstallError("No URL specified")
    if not dirname:
        dirname = dirname_from_url(url)
    if dirname in (".", "..") or os.sep in dirname or "/" in dirname or (os.altsep and os.altsep in dirname) \
            or not dirname:
        raise InstallError(f"Local directory name must be a plain folder name, not {dirname!r}")
    target_dir = os.path.join(extensions_dir, dirname)
    if os.path.exists(target_dir):
        raise InstallError(f"Extension directory already exists: {target_dir}")
    normalized_url = normalize_git_url(url)
    if any(normalize_git_url(remote) == normalized_url for remote in installed_remotes if remote):
        raise InstallError(f"Extension with this URL is already installed: {url}")

    tmpdir = os.path.join(tmp_root, dirname)
    try:
        shutil.rmtree(tmpdir, True)
        os.makedirs(tmp_root, exist_ok=True)
        try:
            git.clone(url, tmpdir, branch or None)
        except git.GitError as e:
            raise InstallError(f"Could not clone {url}: {e}") from e
        os.makedirs(extensions_dir, exist_ok=True)
        try:
            os.rename(tmpdir, target_dir)
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise
            shutil.move(tmpdir, target_dir)  # tmp/ and extensions/ on different file systems (A1111 does the same)
        return target_dir
    finally:
        shutil.rmtree(tmpdir, True)


def installed_message(target_dir: str) -> str:
    """A1111's message after an install."""
    return f"Installed into {target_dir}. Use Installed tab to restart."
