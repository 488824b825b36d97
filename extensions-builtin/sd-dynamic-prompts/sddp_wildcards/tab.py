"""The "Wildcards Manager" tab of the built-in Dynamic Prompts (sd-dynamic-prompts 2.17.1's
sd_dynamic_prompts/wildcards_tab.py, written again for gradio 6 and this page): a searchable tree of the wildcards
under their ``__names__``, an editor that saves, a Delete (confirmed), "Delete all wildcards" (confirmed) and the
collection copy.

The file work is :mod:`sddp_wildcards.files`; the handlers here only turn its results and refusals into the
page's values. The tree is server-rendered HTML; a click on a wildcard goes through the extension's
javascript/wildcards_manager.js to a hidden button (the page's pattern for HTML clicks, as the Extra Networks
cards), so the selection is one Python call. Every handler asks ``context()`` for the folder and the wildcard wrap
at that moment, so a changed ``wildcard_dir`` option is used without a restart.

Generation reads the folder afresh for every job (dynamic_prompting.py makes one WildcardManager per job), so a
saved wildcard is used by the next prompt without a restart or a cache purge.
"""

from __future__ import annotations

import dataclasses
import html
import logging
from collections.abc import Callable
from pathlib import Path

from sddp_wildcards import files

log = logging.getLogger(__name__)

TITLE = "Wildcards Manager"
ELEM_ID = "sddp-wildcard-manager"  # the original's tab id

FOLDER_NAMING_OFF = (
    "Naming a server folder is disabled on a server reachable from the network (--listen, --share, ...) unless it "
    "runs with --enable-insecure-extension-access, and with --hide-ui-dir-config."
)

NO_COLLECTIONS = (
    "No collections are bundled with this built-in Dynamic Prompts: the original extension ships a collections/ "
    "folder (jumbo, parrotzone, ...) in its download, and this server downloads nothing. To copy a collection, "
    "name a folder that holds collection folders in Collections folder (for example the collections/ folder of a "
    "copy of adieyal/sd-dynamic-prompts), or put your own wildcard files into the wildcards folder."
)

@dataclasses.dataclass(frozen=True)
class Context:
    """What the handlers need, read again for every call."""

    folder: Path  # the wildcards folder generation reads
    wrap: str  # option dp_parser_wildcard_wrap ("__")
    extension_dir: Path  # this extension's folder (a collections/ there would be offered)
    extension_dirs: tuple[Path, ...] = ()  # extensions/ folders, for an installed copy of the real extension
    # whether a page user may name a server folder to copy collections from: not on a server reachable from the
    # network unless allowed (A1111's disable_extension_access: --listen/--share without
    # --enable-insecure-extension-access), nor with --hide-ui-dir-config
    folder_naming: bool = True


# -- the tree ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Node:
    folders: dict[str, _Node] = dataclasses.field(default_factory=dict)
    leaves: list[files.Wildcard] = dataclasses.field(default_factory=list)

    def size(self) -> int:
        return len(self.leaves) + sum(n.size() for n in self.folders.values())


def tree_html(ctx: Context, search: str = "") -> str:
    """The tree of ``ctx.folder``'s wildcards whose name contains ``search`` (any case). Folders start closed
    unless there is a search or the list is short."""
    wildcards = files.list_wildcards(ctx.folder)
    needle = (search or "").strip().lower()
    shown = [w for w in wildcards if needle in w.name.lower()] if needle else wildcards
    root = _Node()
    for w in shown:
        node = root
        for part in w.name.split("/")[:-1]:
            node = node.folders.setdefault(part, _Node())
        node.leaves.append(w)
    folder = html.escape(str(ctx.folder))
    if not wildcards:
        summary = (f"No wildcards in <code>{folder}</code> yet: copy a collection, put .txt / .yaml / .json files "
                   "there, or type a file name in File, values in the editor, and Save.")
    elif not shown:
        summary = f"No wildcard name contains <b>{html.escape(search.strip())}</b> ({len(wildcards)} in all)."
    else:
        of = f" of {len(wildcards)}" if needle else ""
        summary = f"{len(shown)}{of} wildcard{'s' if len(wildcards) != 1 else ''} in <code>{folder}</code>"
    unread = files.unread_files(ctx.folder)
    if unread:
        summary += ("<br>Not read by dynamicprompts (it reads .yaml, not .yml; rename them): "
                    + ", ".join(f"<code>{html.escape(u)}</code>" for u in unread))
    opened = bool(needle) or len(shown) <= 40
    return (f"<div><div class='sddp-summary'>{summary}</div>"
            f"<ul class='sddp-tree'>{_node_html(root, ctx.wrap, opened)}</ul></div>")


def _node_html(node: _Node, wrap: str, opened: bool) -> str:
    parts = []
    for name, child in sorted(node.folders.items()):
        parts.append(f"<li class='sddp-folder'><details{' open' if opened else ''}><summary>{html.escape(name)}"
                     f"<span class='sddp-count'>({child.size()})</span></summary>"
                     f"<ul>{_node_html(child, wrap, opened)}</ul></details></li>")
    for w in sorted(node.leaves, key=lambda w: w.name):
        source = html.escape(w.file.rsplit("/", 1)[-1] + (f" › {w.key}" if w.key else ""))
        wrapped = html.escape(f"{wrap}{w.name}{wrap}")
        parts.append(f"<li class='sddp-leaf'><button type='button' class='sddp-wildcard' "
                     f"data-name='{html.escape(w.name, quote=True)}' title='{wrapped} in {html.escape(w.file)}'>"
                     f"{html.escape(w.name.rsplit('/', 1)[-1])}</button><span class='sddp-source'>{source} · "
                     f"{w.count} value{'' if w.count == 1 else 's'}</span></li>")
    return "".join(parts)


# -- handlers (plain functions of strings, so they are tested without a browser) -------------------------------------

def message(text: str, error: bool = False) -> str:
    return f"<div class='sddp-message{' error' if error else ''}'>{html.escape(text)}</div>"


def wrapped_names(ctx: Context, file: str, key: str = "") -> str:
    """``__name__`` of what ``file`` / ``key`` defines (several separated by spaces), '' when nothing yet."""
    try:
        names = files.wildcard_names(ctx.folder, file, key)
    except files.WildcardFileError:
        return ""
    return " ".join(f"{ctx.wrap}{n}{ctx.wrap}" for n in names)


def select(ctx: Context, name: str) -> tuple[str, str, str, str, str]:
    """A wildcard clicked in the tree: (``__name__``, file, key, editor text, status)."""
    entry = next((w for w in files.list_wildcards(ctx.folder) if w.name == name), None)
    if entry is None:
        return "", "", "", "", message(f"{ctx.wrap}{name}{ctx.wrap} is not in the wildcards folder any more: "
                                       "Refresh wildcards.", error=True)
    try:
        text = files.read(ctx.folder, entry.file, entry.key)
    except (files.WildcardFileError, OSError) as e:
        return "", entry.file, entry.key, "", message(str(e), error=True)
    where = f"key {entry.key} of {entry.file}" if entry.key else entry.file
    note = (" Saving under a key rewrites the file with the YAML writer (its comments go)."
            if entry.key and entry.file.endswith(".yaml") else "")
    return (f"{ctx.wrap}{entry.name}{ctx.wrap}", entry.file, entry.key, text,
            message(f"{ctx.wrap}{entry.name}{ctx.wrap}: {entry.count} value{'' if entry.count == 1 else 's'} from "
                    f"{where}.{note}"))


def open_file(ctx: Context, file: str, key: str) -> tuple[str, str, str, str, str]:
    """The file (and key) typed in File / Key: (``__name__``, file, key, editor text, status); a file that is not
    there yet opens empty, to be written by Save."""
    try:
        path, rel = files.resolve(ctx.folder, file)
        text = files.read(ctx.folder, rel, key)
    except (files.WildcardFileError, OSError) as e:
        return "", file, key, "", message(str(e), error=True)
    status = f"Opened {rel}" + (f", key {key}" if key.strip() else "") if path.is_file() else (
        f"{rel} is a new file: type its values and Save.")
    return wrapped_names(ctx, rel, key), rel, key.strip().strip("/"), text, message(status)


def save(ctx: Context, file: str, key: str, text: str, search: str = "") -> tuple[str, str, str, str]:
    """Save: (``__name__``, file, status, tree)."""
    try:
        rel = files.save(ctx.folder, file, text, key)
    except (files.WildcardFileError, OSError) as e:
        return "", file, message(str(e), error=True), tree_html(ctx, search)
    names = wrapped_names(ctx, rel, key)
    where = f"key {key.strip().strip('/')} of {rel}" if key.strip().strip("/") else rel
    used = f" {names} is used by the next generation." if names else ""
    return names, rel, message(f"Saved {where}.{used}"), tree_html(ctx, search)


def delete(ctx: Context, file: str, key: str, confirmed: bool, search: str = "") -> tuple[str, str, str, str, str, str]:
    """Delete (after the page's confirmation): (``__name__``, file, key, editor text, status, tree)."""
    keep = (wrapped_names(ctx, file, key), file, key)
    if not confirmed:
        return (*keep, _unchanged(), message("Not deleted."), tree_html(ctx, search))
    try:
        what = files.delete(ctx.folder, file, key)
    except (files.WildcardFileError, OSError) as e:
        return (*keep, _unchanged(), message(str(e), error=True), tree_html(ctx, search))
    return "", "", "", "", message(f"Deleted {what}."), tree_html(ctx, search)


def delete_all(ctx: Context, confirmed: bool, search: str = "") -> tuple[str, str]:
    """Delete all wildcards (after the page's confirmation): (status, tree)."""
    if not confirmed:
        return message("Nothing deleted."), tree_html(ctx, search)
    try:
        count = files.delete_all(ctx.folder)
    except OSError as e:
        return message(f"Could not delete every wildcard file: {e}", error=True), tree_html(ctx, search)
    return (message(f"Deleted {count} wildcard file{'' if count == 1 else 's'} from {ctx.folder}."),
            tree_html(ctx, search))


def collection_choices(ctx: Context, extra: str = "") -> tuple[list[str], str]:
    """(collection labels, note) for the collection dropdown."""
    if extra and extra.strip() and not ctx.folder_naming:
        return [], message(FOLDER_NAMING_OFF, error=True)
    if extra and extra.strip() and not Path(extra.strip()).expanduser().is_dir():
        return ([], message(f"{extra.strip()} is not a folder on this server. {NO_COLLECTIONS}", error=True))
    found = files.collections(files.collection_roots(ctx.extension_dir, list(ctx.extension_dirs), extra))
    if not found:
        return [], message(NO_COLLECTIONS, error=bool(extra and extra.strip()))
    return sorted(found), message(f"{len(found)} collection{'' if len(found) == 1 else 's'} found.")


def copy_collection(ctx: Context, label: str, overwrite: bool, extra: str = "", search: str = "") -> tuple[str, str]:
    """Copy a collection into the wildcards folder: (status, tree)."""
    if extra and extra.strip() and not ctx.folder_naming:
        return message(FOLDER_NAMING_OFF, error=True), tree_html(ctx, search)
    found = files.collections(files.collection_roots(ctx.extension_dir, list(ctx.extension_dirs), extra))
    if not found:
        return message(NO_COLLECTIONS, error=True), tree_html(ctx, search)
    if label not in found:
        return message("Select a collection first." if not label else f"No collection {label} (Refresh wildcards "
                       "lists them again).", error=True), tree_html(ctx, search)
    source = found[label]
    try:
        copied, kept = files.copy_collection(source, ctx.folder, overwrite=bool(overwrite))
    except (files.WildcardFileError, OSError) as e:
        return message(f"Copy stopped: {e}", error=True), tree_html(ctx, search)
    text = f"Copied {copied} file{'' if copied == 1 else 's'} of {source.name} into {ctx.folder / source.name}."
    if kept:
        text += f" {kept} already there kept (tick Overwrite existing to replace them)."
    return message(text), tree_html(ctx, search)


def _unchanged():
    import gradio as gr

    return gr.update()


# -- the gradio tab ------------------------------------------------------------------------------------------------

def build(context: Callable[[], Context]):
    """The tab, for the extension's ``on_ui_tabs`` callback: ``[(Blocks, title, elem_id)]``."""
    import gradio as gr

    def ctx() -> Context:
        return context()

    help_html = (
        "<ol><li>Click a wildcard in the tree to edit it: a .txt file's lines, or the values under its key in a "
        ".yaml / .json file.</li>"
        "<li>Use it in a prompt by its name, copied from Wildcard (<code>__name__</code>).</li>"
        "<li>Save writes the file; the next generation uses it (no restart). A new wildcard: type a File "
        "(<code>animals/pets.txt</code>, or a .yaml / .json file and a Key) and Save.</li>"
        "<li>The wildcards folder is the option <i>Wildcards folder</i> (Settings &gt; Dynamic Prompts), else this "
        "extension's wildcards/ folder.</li></ol>")

    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                search = gr.Textbox(placeholder="Search in wildcard names...", show_label=False, container=False,
                                    elem_id="sddp-wildcard-search")
                tree = gr.HTML(lambda: tree_html(ctx()), elem_id="sddp-wildcard-tree")
                with gr.Row():
                    refresh = gr.Button("Refresh wildcards", elem_id="sddp-wildcard-load-tree-button")
                    delete_all_button = gr.Button("Delete all wildcards", variant="stop",
                                                  elem_id="sddp-wildcard-delete-tree-button")
                with gr.Accordion("Help", open=False):
                    gr.HTML(help_html)
                with gr.Accordion("Collection actions", open=False):
                    collections_folder = gr.Textbox(
                        label="Collections folder", elem_id="sddp-wildcard-collections-folder",
                        placeholder="a folder of collection folders (none is bundled here)",
                        interactive=ctx().folder_naming)
                    choices, note = collection_choices(ctx())
                    collection = gr.Dropdown(choices=choices, value=None, label="Select a collection",
                                             elem_id="sddp-wildcard-collection")
                    with gr.Row():
                        copy_button = gr.Button("Copy collection", elem_id="sddp-wildcard-copy-collection")
                        overwrite = gr.Checkbox(label="Overwrite existing", value=False)
                    collections_note = gr.HTML(note, elem_id="sddp-wildcard-collections-note")
            with gr.Column(scale=2):
                name = gr.Textbox(label="Wildcard", interactive=False, buttons=["copy"],
                                  elem_id="sddp-wildcard-file-name")
                with gr.Row():
                    file = gr.Textbox(label="File", elem_id="sddp-wildcard-file-path", scale=3,
                                      placeholder="animals/pets.txt",
                                      info="relative to the wildcards folder: .txt, .yaml or .json")
                    key = gr.Textbox(label="Key", elem_id="sddp-wildcard-key", scale=2,
                                     info=".yaml / .json: the key path (colors/warm); empty: the whole file")
                    open_button = gr.Button("Open", elem_id="sddp-wildcard-open-button", scale=0, min_width=80)
                editor = gr.Textbox(label="File editor", lines=16, max_lines=40, interactive=True,
                                    elem_id="sddp-wildcard-file-editor")
                with gr.Row():
                    save_button = gr.Button("Save wildcards", variant="primary", elem_id="sddp-wildcard-save-button")
                    delete_button = gr.Button("Delete", variant="stop", elem_id="sddp-wildcard-delete-button")
                status = gr.HTML("", elem_id="sddp-wildcard-status")
        # the tree's clicks and the confirmations come in through these (javascript/wildcards_manager.js)
        selection = gr.Textbox(elem_id="sddp-wildcard-selection", elem_classes=["webui-hidden"], show_label=False,
                               container=False)
        select_button = gr.Button("select", elem_id="sddp-wildcard-select-button", elem_classes=["webui-hidden"])
        confirmed = gr.Checkbox(value=False, elem_classes=["webui-hidden"], container=False, show_label=False)

        select_button.click(lambda n: select(ctx(), n), [selection], [name, file, key, editor, status],
                            js="(n) => [window.sddpWildcardSelection || '']", show_progress="hidden")
        open_button.click(lambda f, k: open_file(ctx(), f, k), [file, key], [name, file, key, editor, status],
                          show_progress="hidden")
        search.change(lambda s: tree_html(ctx(), s), [search], [tree], show_progress="hidden",
                      trigger_mode="always_last")

        def on_refresh(s, extra, selected):
            c = ctx()
            labels, text = collection_choices(c, extra)
            return (tree_html(c, s), gr.update(choices=labels, value=selected if selected in labels else None),
                    text)

        refresh_io = ([search, collections_folder, collection], [tree, collection, collections_note])
        refresh.click(on_refresh, *refresh_io, show_progress="hidden")
        collections_folder.submit(on_refresh, *refresh_io, show_progress="hidden")
        collections_folder.blur(on_refresh, *refresh_io, show_progress="hidden")
        save_button.click(lambda f, k, t, s: save(ctx(), f, k, t, s), [file, key, editor, search],
                          [name, file, status, tree], show_progress="hidden")
        delete_button.click(lambda f, k, c, s: delete(ctx(), f, k, c, s), [file, key, confirmed, search],
                            [name, file, key, editor, status, tree], show_progress="hidden",
                            js="(f, k, c, s) => [f, k, sddpConfirmDelete(f, k), s]")
        delete_all_button.click(lambda c, s: delete_all(ctx(), c, s), [confirmed, search], [status, tree],
                                show_progress="hidden", js="(c, s) => [sddpConfirmDeleteAll(), s]")
        copy_button.click(lambda label, o, extra, s: copy_collection(ctx(), label, o, extra, s),
                          [collection, overwrite, collections_folder, search], [status, tree],
                          show_progress="hidden")
    return [(tab, TITLE, ELEM_ID)]


__all__ = [
    "ELEM_ID",
    "TITLE",
    "Context",
    "build",
    "collection_choices",
    "copy_collection",
    "delete",
    "delete_all",
    "open_file",
    "save",
    "select",
    "tree_html",
]
