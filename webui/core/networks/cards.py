"""The Extra Networks card pages' data (A1111 ``ui_extra_networks*.py``), UI-free: the cards of each page (Textual
Inversion, Hypernetworks, Checkpoints, Lora) with the preview image kept beside each file, the description, the
user metadata ``.json`` sidecar, LoRA training metadata; search, folder filter, sort and pages.

A1111 builds every card's HTML at once and filters in the browser; with thousands of files that page is slow, so
here the list is filtered, sorted and cut into pages on the server, and only one page of cards is rendered.
Listing a page reads the registries' file lists (already scanned) plus one ``stat`` and a few ``exists`` per file,
and is cached until ``refresh``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from webui.core.io.files import atomic_write

log = logging.getLogger(__name__)

#: Page id -> title, in A1111's tab order.
PAGES: dict[str, str] = {
    "textual_inversion": "Textual Inversion",
    "hypernetworks": "Hypernetworks",
    "checkpoints": "Checkpoints",
    "lora": "Lora",
}

#: A1111 ``extra_networks_card_order_field`` choices, and its default.
SORT_KEYS = ("Path", "Name", "Date Created", "Date Modified")
DEFAULT_SORT = "Path"

#: A1111 ``allowed_preview_extensions`` (with ``samples_format`` first when it is one of them).
PREVIEW_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif")

#: The user-metadata editor's fields (A1111 ``UserMetadataEditor`` and the Lora/Checkpoint editors), sidecar keys.
METADATA_KEYS = ("description", "sd version", "activation text", "preferred weight", "negative text", "notes",
                 "vae")
SD_VERSIONS = ("Unknown", "SD1", "SD2", "SDXL")

EMBEDDING_EXTENSIONS = (".pt", ".bin", ".safetensors")


class CardError(ValueError):
    """A card action names no known file, or a path outside the page's folders (the UI shows the message)."""


@dataclass(frozen=True)
class Card:
    """One file of a page, as A1111's ``create_item`` describes it."""

    page: str
    name: str  # what the card shows and the prompt uses (A1111 item["name"])
    filename: str  # absolute path of the network file
    folder: str  # its folder relative to the page's root ("" at the top)
    preview: str | None  # absolute path of the preview image beside it
    description: str
    mtime: float
    ctime: float
    sort_path: str
    search_terms: tuple[str, ...]
    user_metadata: dict = field(default_factory=dict, compare=False)
    training_tags: tuple[tuple[str, int], ...] = ()  # LoRA: kohya's ss_tag_frequency, most frequent first

    @property
    def stem(self) -> str:
        return os.path.splitext(self.filename)[0]


# -- files beside a network file ---------------------------------------------------------------------------------------


def find_preview(path_without_ext: str, exists: Callable[[str], bool] = os.path.isfile) -> str | None:
    """A1111 ``find_preview``: ``name.<ext>`` then ``name.preview.<ext>`` for each allowed extension."""
    for ext in PREVIEW_EXTENSIONS:
        for candidate in (f"{path_without_ext}.{ext}", f"{path_without_ext}.preview.{ext}"):
            if exists(candidate):
                return candidate
    return None


def find_description(path_without_ext: str) -> str:
    """A1111 ``find_description``: ``name.txt`` or ``name.description.txt``."""
    for candidate in (f"{path_without_ext}.txt", f"{path_without_ext}.description.txt"):
        try:
            with open(candidate, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            continue
    return ""


def metadata_path(filename: str) -> str:
    """A1111 ``get_user_metadata``: the sidecar is the file's name with ``.json`` instead of its extension."""
    return os.path.splitext(filename)[0] + ".json"


def read_user_metadata(filename: str) -> dict:
    """The ``.json`` sidecar (A1111 ``get_user_metadata``); {} when missing or unreadable (logged)."""
    path = metadata_path(filename)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        log.error("reading user metadata %s: %s", path, e)
        return {}
    return data if isinstance(data, dict) else {}


def write_user_metadata(filename: str, changes: dict) -> dict:
    """A1111 ``UserMetadataEditor.write_user_metadata``: the sidecar's other keys kept, ``changes`` over them, written
    atomically (indented, as A1111's ``json.dump(..., indent=4)``). Returns what was written."""
    data = {**read_user_metadata(filename), **changes}
    atomic_write(metadata_path(filename), json.dumps(data, indent=4, ensure_ascii=False))
    return data


def training_tags(metadata: dict) -> list[tuple[str, int]]:
    """A1111 Lora ``build_tags``: kohya's ``ss_tag_frequency`` ({dataset: {tag: count}}) summed over datasets (the
    "NN_" repeat prefix of a dataset name is not part of a tag), most frequent first."""
    freq = metadata.get("ss_tag_frequency")
    if isinstance(freq, str):
        try:
            freq = json.loads(freq)
        except ValueError:
            return []
    if not isinstance(freq, dict):
        return []
    counts: dict[str, int] = {}
    for tags in freq.values():
        if not isinstance(tags, dict):
            continue
        for tag, n in tags.items():
            tag = str(tag).strip()
            try:
                counts[tag] = counts.get(tag, 0) + int(n)
            except (TypeError, ValueError):
                continue
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


#: The training-metadata rows A1111's Lora editor shows (``LoraUserMetadataEditor.get_metadata_table``).
TRAINING_ROWS = (("ss_output_name", "Output name"), ("ss_sd_model_name", "Model"), ("ss_clip_skip", "Clip skip"),
                 ("ss_num_train_images", "Training images"), ("ss_num_epochs", "Epochs"),
                 ("ss_network_dim", "Network dim"), ("ss_network_alpha", "Network alpha"),
                 ("ss_resolution", "Resolution"), ("ss_learning_rate", "Learning rate"),
                 ("ss_training_started_at", "Training started"))


def training_table(metadata: dict) -> list[tuple[str, str]]:
    return [(label, str(metadata[key])) for key, label in TRAINING_ROWS if metadata.get(key) not in (None, "")]


# -- prompts ---------------------------------------------------------------------------------------------------------


def _weight(value: Any, default: float) -> str:
    try:
        w = float(value)
    except (TypeError, ValueError):
        w = 0.0
    w = w or float(default)
    return f"{w:g}"


def card_prompt(page: str, card: Card, *, default_multiplier: float = 1.0, lora_name: str | None = None) -> str:
    """What clicking the card adds to the prompt (A1111 ``create_item``'s prompt): ``<lora:name:weight>`` (weight:
    the card's preferred weight, else ``extra_networks_default_multiplier``) followed by its activation text, the
    embedding's name, ``<hypernet:name:multiplier>``; checkpoints add nothing (the click selects them)."""
    meta = card.user_metadata
    if page == "lora":
        text = f"<lora:{lora_name or card.name}:{_weight(meta.get('preferred weight'), default_multiplier)}>"
        activation = str(meta.get("activation text") or "").strip()
        return f"{text} {activation}" if activation else text
    if page == "hypernetworks":
        return f"<hypernet:{card.name}:{_weight(None, default_multiplier)}>"
    if page == "textual_inversion":
        return card.name
    return ""


def card_negative_prompt(card: Card) -> str:
    """The card's negative text (A1111: Lora's "negative text" goes into the negative prompt)."""
    return str(card.user_metadata.get("negative text") or "").strip()


_RE_NET = re.compile(r"<([^:^>]+:[^:]+):[\d.]+>(.*)", re.DOTALL)
_RE_NET_G = re.compile(r"<([^:^>]+:[^:]+):[\d.]+>")


def remove_from_prompt(prompt: str, text: str, separator: str = " ") -> tuple[str, bool]:
    """A1111 ``tryToRemoveExtraNetworkFromPrompt`` (javascript/extraNetworks.js), step by step: for a network tag,
    every ``<kind:name:weight>`` of that kind and name goes (any weight), then the card's extra text right after
    the last one and the separator right before it; other text goes with an optional separator before it."""
    m = _RE_NET.match(text)
    if m:
        part, after = m.group(1), m.group(2)
        found_at = -1
        pieces, last = [], 0
        for hit in _RE_NET_G.finditer(prompt):
            if hit.group(1) == part:
                pieces.append(prompt[last:hit.start()])
                found_at = sum(len(x) for x in pieces)
                last = hit.end()
        if found_at < 0:
            return prompt, False
        new = "".join(pieces) + prompt[last:]
        if after and new[found_at:found_at + len(after)] == after:
            new = new[:found_at] + new[found_at + len(after):]
        if separator and found_at >= len(separator) and new[found_at - len(separator):found_at] == separator:
            new = new[:found_at - len(separator)] + new[found_at:]
        return new, True
    new = re.sub(f"((?:{re.escape(separator)})?{re.escape(text)})", "", prompt)
    return new, new != prompt


def toggle_in_prompt(prompt: str, text: str, separator: str = " ") -> str:
    """A1111 ``updatePromptArea``: remove the card's text when the prompt has it, else append it after the
    separator (an empty prompt just gets the text)."""
    if not text:
        return prompt
    new, removed = remove_from_prompt(prompt, text, separator)
    if removed:
        return new
    return f"{prompt}{separator}{text}" if prompt else text


# -- listing ---------------------------------------------------------------------------------------------------------


def _walk(folder: str, extensions: Sequence[str]) -> Iterable[str]:
    if not os.path.isdir(folder):
        return
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort(key=str.lower)
        for fn in sorted(files, key=str.lower):
            if fn.lower().endswith(tuple(extensions)):
                yield os.path.join(root, fn)


def _relative_folder(path: str, roots: Sequence[str]) -> tuple[str, str]:
    """(root containing ``path``, folder of ``path`` relative to it)."""
    for root in roots:
        if is_under(path, root):
            rel = os.path.relpath(os.path.dirname(path), root)
            return root, "" if rel == "." else rel.replace(os.sep, "/")
    return "", ""


def is_under(path: str, root: str) -> bool:
    path, root = os.path.abspath(path), os.path.abspath(root)
    return os.path.commonpath([path, root]) == root


def make_card(page: str, name: str, filename: str, roots: Sequence[str], *, metadata: dict | None = None) -> Card:
    stem = os.path.splitext(filename)[0]
    try:
        st = os.stat(filename)
        mtime, ctime = st.st_mtime, st.st_ctime
    except OSError:
        mtime = ctime = 0.0
    root, folder = _relative_folder(filename, roots)
    user = read_user_metadata(filename)
    description = str(user.get("description") or "") or find_description(stem)
    tags = tuple(training_tags(metadata or {}))
    rel = os.path.relpath(filename, root) if root else filename
    terms = (rel.replace(os.sep, "/"), name, description, *(t for t, _ in tags[:20]),
             str(user.get("activation text") or ""))
    return Card(page=page, name=name, filename=filename, folder=folder, preview=find_preview(stem),
                description=description, mtime=mtime, ctime=ctime, sort_path=rel.lower(),
                search_terms=tuple(t for t in terms if t), user_metadata=user, training_tags=tags)


@dataclass(frozen=True)
class PageQuery:
    """What the page's controls ask for."""

    search: str = ""
    folder: str = ""  # "" = all; else only cards in this folder or below
    sort: str = DEFAULT_SORT
    descending: bool = False
    page: int = 1  # 1-based
    page_size: int = 60


@dataclass(frozen=True)
class PageResult:
    cards: list[Card]
    total: int  # matching cards
    pages: int
    page: int


def select(cards: Sequence[Card], query: PageQuery) -> PageResult:
    """Filter (A1111's search: the text, lower-cased, found in one of the card's search terms; the folder and its
    sub-folders), sort (A1111's sort keys and direction), then cut out one page."""
    needle = query.search.strip().lower()
    folder = query.folder.strip("/")
    out = []
    for card in cards:
        if folder and not (card.folder == folder or card.folder.startswith(folder + "/")):
            continue
        if needle and not any(needle in term.lower() for term in card.search_terms):
            continue
        out.append(card)
    key = {"Name": lambda c: c.name.lower(), "Date Created": lambda c: c.ctime,
           "Date Modified": lambda c: c.mtime}.get(query.sort, lambda c: c.sort_path)
    out.sort(key=key, reverse=query.descending)
    size = max(1, int(query.page_size))
    pages = max(1, -(-len(out) // size))
    page = min(max(1, int(query.page)), pages)
    return PageResult(out[(page - 1) * size:page * size], len(out), pages, page)


def folders(cards: Iterable[Card]) -> list[str]:
    """Every folder (and its parents) holding a card, sorted: A1111's folder buttons / tree."""
    found: set[str] = set()
    for card in cards:
        parts = card.folder.split("/") if card.folder else []
        for i in range(1, len(parts) + 1):
            found.add("/".join(parts[:i]))
    return sorted(found, key=str.lower)


class Catalog:
    """The cards of every page, listed from the registries on first use and on ``refresh(page)`` (A1111's 🔄
    "Refresh page": the registry rescans its folders too). Thread-safe; holds no UI objects."""

    def __init__(self, *, registry=None, loras=None, embeddings=None, hypernetworks=None,
                 options: Callable[[str], Any] | None = None) -> None:
        self.registry, self.loras, self.embeddings, self.hypernetworks = registry, loras, embeddings, hypernetworks
        self.options = options or (lambda key: None)
        self._lock = threading.RLock()
        self._cards: dict[str, list[Card]] = {}
        self._thumbs: dict[str, tuple[float, str]] = {}

    def thumbnail(self, path: str | None, size: int = 192) -> str:
        """A ``data:`` URL of a small JPEG of a preview image (the page inlines only the shown cards' previews, so
        no file route is needed), cached by (path, mtime); "" when there is none or it cannot be read."""
        if not path:
            return ""
        try:
            mtime = os.path.getmtime(path)
        except OSError:
            return ""
        with self._lock:
            hit = self._thumbs.get(path)
        if hit and hit[0] == mtime:
            return hit[1]
        import base64
        import io

        from PIL import Image

        try:
            with Image.open(path) as im:
                im.thumbnail((size, size * 2))
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="JPEG", quality=80)
        except (OSError, ValueError) as e:  # a broken preview must not break the page
            log.warning("preview %s: %s", path, e)
            return ""
        url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        with self._lock:
            self._thumbs[path] = (mtime, url)
        return url

    def roots(self, page: str) -> list[str]:
        """The folders the page's files live in: where previews and sidecars may be written."""
        if page == "lora" and self.loras is not None:
            return list(self.loras.dirs)
        if page == "textual_inversion" and self.embeddings is not None:
            return list(self.embeddings.dirs)
        if page == "hypernetworks" and self.hypernetworks is not None:
            return list(self.hypernetworks.dirs)
        if page == "checkpoints" and self.registry is not None:
            return [*self.registry.extra_dirs, self.registry.checkpoints_dir]
        return []

    def refresh(self, page: str) -> list[Card]:
        if page == "lora" and self.loras is not None:
            self.loras.refresh()
        elif page == "hypernetworks" and self.hypernetworks is not None:
            self.hypernetworks.refresh()
        elif page == "checkpoints" and self.registry is not None:
            self.registry.refresh()
        with self._lock:
            self._cards.pop(page, None)
        return self.cards(page)

    def cards(self, page: str) -> list[Card]:
        with self._lock:
            if page not in self._cards:
                self._cards[page] = self._list(page)
            return self._cards[page]

    def _list(self, page: str) -> list[Card]:
        roots = self.roots(page)
        if page == "lora" and self.loras is not None:
            return [make_card(page, info.name, info.path, roots, metadata=info.metadata) for info in self.loras.list()]
        if page == "hypernetworks" and self.hypernetworks is not None:
            return [make_card(page, info.name, info.path, roots) for info in self.hypernetworks.list()]
        if page == "checkpoints" and self.registry is not None:
            return [make_card(page, info.title, info.filename, roots) for info in self.registry.list()]
        if page == "textual_inversion":
            cards = []
            for root in roots:
                for path in _walk(root, EMBEDDING_EXTENSIONS):
                    cards.append(make_card(page, os.path.splitext(os.path.basename(path))[0], path, roots))
            return cards
        return []

    def find(self, page: str, filename: str) -> Card:
        """The card of ``filename`` (checked to be one of the page's files)."""
        for card in self.cards(page):
            if card.filename == filename:
                return card
        raise CardError(f"{filename!r} is not a file of the {PAGES.get(page, page)} page")

    def prompt(self, page: str, card: Card) -> str:
        name = None
        if page == "lora" and self.loras is not None:
            info = self.loras.resolve(card.name)
            if info is not None:
                name = self.loras.prompt_name(info, self.options("lora_preferred_name") or "Alias from file")
        return card_prompt(page, card, default_multiplier=float(self.options("extra_networks_default_multiplier") or 1.0),
                           lora_name=name)

    def save_metadata(self, page: str, filename: str, changes: dict) -> Card:
        """Write the card's sidecar (only the editor's keys) and return the card read again."""
        self.find(page, filename)
        clean = {k: v for k, v in changes.items() if k in METADATA_KEYS}
        write_user_metadata(filename, clean)
        return self._reread(page, filename)

    def replace_preview(self, page: str, filename: str, image, infotext: str | None = None) -> Card:
        """A1111 "Replace preview": the image saved as ``<file stem>.png`` beside the file (with its infotext), which
        ``find_preview`` picks first; only for the page's own files."""
        from webui.core.io.images import save_image_atomic

        self.find(page, filename)
        target = os.path.splitext(filename)[0] + ".png"
        if not any(is_under(target, r) for r in self.roots(page)):
            raise CardError(f"{target!r} is outside the {PAGES[page]} folders")
        save_image_atomic(image, target, "png", infotext or None)
        return self._reread(page, filename)

    def _reread(self, page: str, filename: str) -> Card:
        with self._lock:
            cards = self.cards(page)
            for i, card in enumerate(cards):
                if card.filename == filename:
                    metadata = None
                    if page == "lora" and self.loras is not None:
                        info = next((x for x in self.loras.list() if x.path == filename), None)
                        metadata = info.metadata if info is not None else None
                    new = make_card(page, card.name, filename, self.roots(page), metadata=metadata)
                    cards[i] = new
                    return new
        raise CardError(f"{filename!r} is not a file of the {PAGES.get(page, page)} page")
