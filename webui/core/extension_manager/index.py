"""The "Available" list: A1111's extension index (a JSON document at a URL) loaded, filtered and sorted as
``ui_extensions.refresh_available_extensions_from_data`` does.

The index's shape (AUTOMATIC1111/stable-diffusion-webui-extensions index.json)::

    {"tags": {"script": "description", ...},
     "extensions": [{"name", "url", "description", "tags": [...], "added": "2022-11-01",
                     "created_at": "2022-10-10T...Z", "commit_time": "2023-01-01T...Z", "stars": 12}, ...]}
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone

from webui.core.extension_manager.install import dirname_from_url, normalize_git_url

#: A1111's default index URL; the WEBUI_EXTENSIONS_INDEX environment variable replaces it, as in A1111
DEFAULT_INDEX_URL = "https://raw.githubusercontent.com/AUTOMATIC1111/stable-diffusion-webui-extensions/master/index.json"
INDEX_TIMEOUT = 20  # seconds
MAX_INDEX_BYTES = 32 * 1024 * 1024

#: A1111's "Order" radio (type="index"): (choice, reverse, key)
SORT_ORDERING = (
    ("newest first", True, lambda x: x.get("added", "z")),
    ("oldest first", False, lambda x: x.get("added", "z")),
    ("a-z", False, lambda x: x.get("name", "z")),
    ("z-a", True, lambda x: x.get("name", "z")),
    ("internal order", False, lambda x: "z"),
    ("update time", True, lambda x: x.get("commit_time", "")),
    ("create time", True, lambda x: x.get("created_at", "")),
    ("stars", True, lambda x: x.get("stars", 0)),
)
SORT_CHOICES = [choice for choice, _, _ in SORT_ORDERING]
DEFAULT_TAGS = ["ads", "localization", "installed"]  # A1111's "Extension tags" value (hidden by default)
TAG_CHOICES = ["script", "ads", "localization", "installed"]


class IndexUnavailable(RuntimeError):
    """The index could not be loaded; the message says from where and why (offline, HTTP error, not JSON)."""


def default_index_url() -> str:
    return os.environ.get("WEBUI_EXTENSIONS_INDEX", DEFAULT_INDEX_URL)


def load_index(url: str, timeout: float = INDEX_TIMEOUT) -> dict:
    """Fetch and parse the index at ``url`` (http or https). A machine without internet gets IndexUnavailable
    naming the URL and the network error, never a hang: the request times out after ``timeout`` seconds."""
    url = (url or "").strip()
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise IndexUnavailable(f"Extension index URL must be an http(s) URL, not {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read(MAX_INDEX_BYTES + 1)
    except urllib.error.HTTPError as e:
        raise IndexUnavailable(f"Could not load the extension index from {url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise IndexUnavailable(f"Could not load the extension index from {url}: {reason} "
                               "(this machine may be offline; the Installed tab and Install from URL still work)"
                               ) from e
    if len(text) > MAX_INDEX_BYTES:
        raise IndexUnavailable(f"The extension index at {url} is larger than {MAX_INDEX_BYTES} bytes")
    try:
        index = json.loads(text)
    except ValueError as e:
        raise IndexUnavailable(f"The extension index at {url} is not JSON: {e}") from e
    if not isinstance(index, dict) or not isinstance(index.get("extensions"), list):
        raise IndexUnavailable(f"The extension index at {url} has no \"extensions\" list")
    return index


def _date(info: dict, key: str) -> str:
    """A1111 get_date: an ISO time of the index as a local date, or ""."""
    try:
        return (datetime.strptime(info.get(key), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).astimezone()
                .strftime("%Y-%m-%d"))
    except (ValueError, TypeError):
        return ""


@dataclass
class AvailableRow:
    name: str
    url: str
    description: str
    tags: list[str]
    added: str
    update_time: str
    create_time: str
    stars: int
    installed: bool


@dataclass
class AvailableList:
    rows: list[AvailableRow] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # tag -> description, the index's plus any seen
    hidden: int = 0


def available(index: dict, installed_names, installed_remotes, *, selected_tags=(), showing_type: str = "hide",
              filtering_type: str = "or", sort_column: int = 0, filter_text: str = "") -> AvailableList:
    """A1111 refresh_available_extensions_from_data: the index's extensions sorted by ``sort_column`` (an index into
    SORT_CHOICES), "installed" added to the tags of those installed (by folder name or remote), those with
    ``selected_tags`` hidden ("hide", any tag with "or", all with "and") or the only ones shown ("show"), then
    filtered by ``filter_text`` in the name or description."""
    installed_names = set(installed_names)
    installed_urls = {normalize_git_url(r) for r in installed_remotes if r}
    tags = dict(index.get("tags") or {})
    selected = set(selected_tags or ())
    out = AvailableList(tags=tags)
    _, reverse, key = SORT_ORDERING[sort_column if isinstance(sort_column, int) and 0 <= sort_column < len(SORT_ORDERING)
                                    else 0]
    entries = [e for e in index.get("extensions") or [] if isinstance(e, dict)]
    for ext in sorted(entries, key=key, reverse=reverse):
        url = ext.get("url")
        if url is None:
            continue
        name = str(ext.get("name", "noname"))
        description = str(ext.get("description", ""))
        existing = dirname_from_url(url) in installed_names or normalize_git_url(url) in installed_urls
        ext_tags = list(ext.get("tags") or []) + (["installed"] if existing else [])
        if selected:
            matched = [t for t in ext_tags if t in selected]
            need_hide = len(matched) > 0 if filtering_type == "or" else len(matched) == len(selected)
            if showing_type == "show":
                need_hide = not need_hide
            if need_hide:
                out.hidden += 1
                continue
        if filter_text and filter_text.strip():
            needle = filter_text.lower()
            if needle not in name.lower() and needle not in description.lower():
                out.hidden += 1
                continue
        try:
            stars = int(ext.get("stars", 0))
        except (TypeError, ValueError):
            stars = 0
        out.rows.append(AvailableRow(name=name, url=str(url), description=description, tags=ext_tags,
                                     added=str(ext.get("added", "unknown")), update_time=_date(ext, "commit_time"),
                                     create_time=_date(ext, "created_at"), stars=stars, installed=existing))
        for tag in ext_tags:
            tags.setdefault(tag, tag)
    return out
