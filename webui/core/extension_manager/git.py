"""The git operations of the Extensions tab, as A1111's ``Extension`` methods do them with GitPython: check for
updates (``check_updates``), update or restore a commit (``fetch_and_reset_hard``), clone an extension
(``clone``) and read the web UI's own checkout (``repo_info``).

Every call runs ``git`` with a timeout and without a terminal prompt (GIT_TERMINAL_PROMPT=0), so a remote that asks
for credentials or cannot be reached fails quickly with git's own message instead of hanging the server.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

#: seconds for a command that talks to a remote (fetch, clone); local commands get LOCAL_TIMEOUT
NETWORK_TIMEOUT = 60
LOCAL_TIMEOUT = 10


class GitError(RuntimeError):
    """A git command failed; the message is git's own (its first "fatal:" / "error:" line)."""


def _message(output: str, fallback: str) -> str:
    """git's error line: the first "fatal:" or "error:" line (git adds hints after it), else the last line."""
    lines = [line.strip() for line in (output or "").strip().splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("fatal:", "error:")):
            return line
    return lines[-1] if lines else fallback


def run_git(path: str | None, *args: str, timeout: float = LOCAL_TIMEOUT) -> str:
    """``git [-C path] args``: its stdout, stripped. Raises GitError with git's message when it fails, is missing or
    takes longer than ``timeout``."""
    cmd = ["git", *(["-C", path] if path else []), *args]
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", SSH_ASKPASS="true")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    except FileNotFoundError as e:
        raise GitError("git is not installed (the Extensions tab needs the git command)") from e
    except subprocess.TimeoutExpired as e:
        raise GitError(f"git {args[0]} took longer than {timeout:g} s (is the remote reachable?)") from e
    if out.returncode != 0:
        raise GitError(f"git {args[0]} failed: {_message(out.stderr or out.stdout, f'exit status {out.returncode}')}")
    return out.stdout.strip()


@dataclass
class UpdateStatus:
    """A1111 ``Extension.check_updates``'s outcome: ``can_update`` and ``status`` ("new commits", "behind HEAD",
    "latest", "unknown (remote error)"); ``error`` is git's message when the remote could not be asked."""

    can_update: bool
    status: str
    error: str | None = None


def check_updates(path: str) -> UpdateStatus:
    """A1111 check_updates: a dry-run fetch that reports anything is "new commits"; else HEAD differing from
    ``origin`` (origin/HEAD) is "behind HEAD"; else "latest". A remote that cannot be reached gives "unknown
    (remote error)" with git's message (A1111 logs the exception and leaves the status as it was)."""
    try:
        out = subprocess.run(["git", "-C", path, "fetch", "--dry-run"], capture_output=True, text=True,
                             timeout=NETWORK_TIMEOUT, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", SSH_ASKPASS="true"))
    except FileNotFoundError:
        return UpdateStatus(False, "unknown (remote error)", "git is not installed")
    except subprocess.TimeoutExpired:
        return UpdateStatus(False, "unknown (remote error)", f"the remote did not answer in {NETWORK_TIMEOUT} s")
    if out.returncode != 0:
        return UpdateStatus(False, "unknown (remote error)", _message(out.stderr, "git fetch failed"))
    # git fetch --dry-run lists the refs it would update (" abc..def  main -> origin/main") after the "From" line
    if any("->" in line for line in out.stderr.splitlines()):
        return UpdateStatus(True, "new commits")
    try:
        origin = run_git(path, "rev-parse", "origin")
        head = run_git(path, "rev-parse", "HEAD")
    except GitError as e:
        return UpdateStatus(False, "unknown (remote error)", str(e))
    if origin != head:
        return UpdateStatus(True, "behind HEAD")
    return UpdateStatus(False, "latest")


def fetch_and_reset_hard(path: str, commit: str = "origin") -> None:
    """A1111 fetch_and_reset_hard: ``git fetch --all`` then ``git reset --hard <commit>`` (the update of "Apply and
    restart UI", and the restore of a saved config state)."""
    run_git(path, "fetch", "--all", timeout=NETWORK_TIMEOUT)
    run_git(path, "reset", "--hard", commit, timeout=NETWORK_TIMEOUT)


def clone(url: str, target: str, branch: str | None = None) -> None:
    """A1111 install_extension_from_url's clone: a blobless clone of the default branch or of ``branch``, then
    its submodules."""
    args = ["clone", "--filter=blob:none", *(["--branch", branch] if branch else []), "--", url, target]
    run_git(None, *args, timeout=NETWORK_TIMEOUT)
    run_git(target, "submodule", "update", "--init", "--recursive", timeout=NETWORK_TIMEOUT)


def repo_info(path: str) -> dict:
    """A1111 config_states.get_webui_config for a folder: remote, commit_hash, commit_date (unix seconds), branch;
    None for each that cannot be read (not a checkout, no remote, detached HEAD)."""
    info = {"remote": None, "commit_hash": None, "commit_date": None, "branch": None}
    if not os.path.exists(os.path.join(path, ".git")):
        return info
    for key, args in (("remote", ("config", "--get", "remote.origin.url")), ("commit_hash", ("rev-parse", "HEAD")),
                      ("commit_date", ("log", "-1", "--format=%ct")),
                      ("branch", ("symbolic-ref", "--short", "-q", "HEAD"))):
        try:
            info[key] = run_git(path, *args) or None
        except GitError:
            pass
    if info["commit_date"] is not None:
        info["commit_date"] = int(info["commit_date"])
    return info
