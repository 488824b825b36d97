"""Extra Networks under the prompt of txt2img and img2img (A1111 ``ui_extra_networks.create_ui``): the Textual
Inversion, Hypernetworks, Checkpoints and Lora card pages with search, sort, direction, folders, pages and refresh;
a card click adds its text to the prompt (a second click removes it) or selects the checkpoint; 🛠️ opens the
user-metadata editor (the ``.json`` sidecar A1111 writes) with "Replace preview" from the gallery's image.

The cards come from ``webui.core.networks.cards.Catalog`` (one per AppState, built here on first use); only the page
of cards shown is rendered, its previews inlined as small thumbnails, so thousands of files stay responsive.
Clicks go from the card's ``onclick`` (webui/ui/javascript/extra_networks.js) to one hidden button whose handler
does the work in Python, so the prompt logic lives in the core and is tested there.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from webui.core.networks import cards as nc
from webui.ui import common

log = logging.getLogger(__name__)

PAGE_SIZE = 60
THUMB_SIZE = 192
TITLES = list(nc.PAGES.values())
PAGE_BY_TITLE = {v: k for k, v in nc.PAGES.items()}

CSS = """
<style>
.extra-network-cards { display: flex; flex-wrap: wrap; gap: 8px; }
.extra-network-cards .card { position: relative; width: 160px; height: 220px; border-radius: 8px; overflow: hidden;
  cursor: pointer; background: #ccc center / cover no-repeat; box-shadow: 0 0 3px rgba(0,0,0,.4); }
.extra-network-cards .card.selected { outline: 3px solid #f97316; }
.extra-network-cards .card .actions { position: absolute; bottom: 0; left: 0; right: 0; padding: 6px;
  background: rgba(0,0,0,.55); color: #fff !important; }
.extra-network-cards .card .actions * { color: #fff !important; }
.extra-network-cards .card .name { font-weight: bold; font-size: 0.95em; word-break: break-all; }
.extra-network-cards .card .description { font-size: 0.8em; opacity: 0.9; display: block; max-height: 3.6em;
  overflow: hidden; }
.extra-network-cards .card .edit-button { position: absolute; top: 4px; right: 4px; background: rgba(0,0,0,.5);
  border-radius: 4px; padding: 0 4px; font-size: 1.1em; }
.extra-network-cards .nocards { padding: 1em; opacity: .7; }
.extra-network-dirs { margin-bottom: 6px; }
.extra-network-dirs button { margin: 0 4px 4px 0; padding: 1px 8px; border: 1px solid #999; border-radius: 6px; }
.extra-network-dirs button.selected { background: #f97316; color: #fff; }
</style>
"""


def catalog(state) -> nc.Catalog:
    """The AppState's card catalog (``state.extra_networks``), shared by both tabs."""
    return state.extra_networks


# -- HTML ------------------------------------------------------------------------------------------------------------


def folder_buttons(tab: str, folders: list[str], current: str = "") -> str:
    """A1111's folder buttons above the cards (one per folder, "all" first); a click filters by that folder."""
    if not folders:
        return ""
    out = [f"<div class='extra-network-dirs' id='{tab}_extra_dirs'>"]
    for folder in ["", *folders]:
        label = html.escape(folder or "all")
        cls = " selected" if folder == current else ""
        out.append(f"<button class='extra-network-dir{cls}' data-folder='{html.escape(folder, quote=True)}' "
                   f"onclick=\"webuiExtraNetworkFolder(event, this, '{tab}')\">{label}</button>")
    out.append("</div>")
    return "".join(out)


def cards_html(state, tab: str, page: str, result: nc.PageResult, prompt: str = "", folder: str = "") -> str:
    cat = catalog(state)
    out = [CSS, folder_buttons(tab, nc.folders(cat.cards(page)), folder),
           f"<div class='extra-network-cards' id='{tab}_{page}_cards' data-total='{result.total}'>"]
    if not result.cards:
        out.append("<div class='nocards'>Nothing here. Add some content to the following directories:<br>"
                   + "<br>".join(html.escape(d) for d in cat.roots(page)) + "</div>")
    for card in result.cards:
        thumb = cat.thumbnail(card.preview, THUMB_SIZE)
        style = f" style=\"background-image: url('{thumb}')\"" if thumb else ""
        text = cat.prompt(page, card)
        selected = " selected" if text and text.split(" ")[0] in (prompt or "") else ""
        out.append(
            f"<div class='card{selected}' data-page='{page}' data-filename='{html.escape(card.filename, quote=True)}' "
            f"data-name='{html.escape(card.name, quote=True)}' data-prompt='{html.escape(text, quote=True)}'"
            f"{style} onclick=\"webuiExtraNetworkCard(event, this, '{tab}', 'toggle')\">"
            f"<span class='edit-button' title='Edit metadata' "
            f"onclick=\"webuiExtraNetworkCard(event, this.parentElement, '{tab}', 'edit')\">🛠️</span>"
            f"<div class='actions'><div class='name'>{html.escape(card.name)}</div>"
            f"<span class='description'>{html.escape(card.description)}</span></div></div>")
    out.append("</div>")
    return "".join(out)


# -- the UI ----------------------------------------------------------------------------------------------------------


@dataclass
class ExtraNetworksUi:
    accordion: Any
    page: Any
    search: Any
    sort: Any
    descending: Any
    folder: Any
    page_no: Any
    refresh: Any
    html: Any
    status: Any
    action: Any
    action_button: Any
    editor: Any
    connect_gallery: Any = None
    connect_checkpoint: Any = None
    card_event: Any = None


def build(state, tab: str, prompt, negative_prompt) -> ExtraNetworksUi:
    """The Extra Networks section of tab ``tab`` (call inside its layout, under the prompt row); then
    ``ui.connect_gallery(output_panel)`` feeds "Replace preview" from the tab's gallery."""
    with gr.Accordion("Extra Networks", open=False, elem_id=f"{tab}_extra_networks") as accordion:
        with gr.Row(equal_height=True):
            page = gr.Radio(TITLES, value="Lora", label="Page", elem_id=f"{tab}_extra_networks_page", scale=3)
            search = gr.Textbox(label="Search", placeholder="Search...", elem_id=f"{tab}_extra_search", scale=2)
            sort = gr.Dropdown(list(nc.SORT_KEYS), value=nc.DEFAULT_SORT, label="Sort by",
                               elem_id=f"{tab}_extra_sort", scale=1)
            descending = gr.Checkbox(label="Descending", value=False, elem_id=f"{tab}_extra_sort_dir", scale=1)
            folder = gr.Dropdown([("All", "")], value="", label="Folder", elem_id=f"{tab}_extra_folder", scale=1)
            page_no = gr.Number(value=1, precision=0, minimum=1, label="Page", elem_id=f"{tab}_extra_page_no",
                                scale=0, min_width=80)
            refresh = gr.Button("🔄", elem_id=f"{tab}_extra_refresh", min_width=40, scale=0, elem_classes=["tool"])
        status = gr.HTML(elem_id=f"{tab}_extra_status")
        cards = gr.HTML(CSS, elem_id=f"{tab}_extra_networks_cards")
        # the card clicks' channel: the script puts the action into the textbox's value and clicks the button
        action_box = gr.Textbox(elem_id=f"{tab}_extra_networks_action", elem_classes=["webui-hidden"], show_label=False,
                            container=False)
        action_button = gr.Button("card action", elem_id=f"{tab}_extra_networks_action_button",
                                  elem_classes=["webui-hidden"])
        with gr.Column(visible=False, elem_id=f"{tab}_extra_networks_editor", variant="panel") as editor:
            editor_title = gr.HTML(elem_id=f"{tab}_extra_edit_title")
            edit_file = gr.Textbox(visible=False)
            edit_page = gr.Textbox(visible=False)
            description = gr.Textbox(label="Description", lines=2, elem_id=f"{tab}_extra_edit_description")
            with gr.Row():
                sd_version = gr.Dropdown(list(nc.SD_VERSIONS), value="Unknown", label="Stable Diffusion version",
                                         elem_id=f"{tab}_extra_edit_sd_version")
                weight = gr.Slider(0.0, 2.0, value=0.0, step=0.01, label="Preferred weight",
                                   elem_id=f"{tab}_extra_edit_weight")
                vae = gr.Dropdown(["Automatic", "None"], value="Automatic", label="Preferred VAE", visible=False,
                                  elem_id=f"{tab}_extra_edit_vae", allow_custom_value=True)
            activation = gr.Textbox(label="Activation text", lines=2, elem_id=f"{tab}_extra_edit_activation")
            negative_text = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{tab}_extra_edit_negative")
            notes = gr.Textbox(label="Notes", lines=2, elem_id=f"{tab}_extra_edit_notes")
            training = gr.HTML(elem_id=f"{tab}_extra_edit_training")
            with gr.Row():
                save = gr.Button("Save", variant="primary", elem_id=f"{tab}_extra_edit_save")
                replace = gr.Button("Replace preview", elem_id=f"{tab}_extra_edit_replace_preview")
                cancel = gr.Button("Cancel", elem_id=f"{tab}_extra_edit_cancel")
    accordion.do_not_save_to_config = True  # ui-config.json: pickers and the editor hold no defaults
    ui = ExtraNetworksUi(accordion, page, search, sort, descending, folder, page_no, refresh, cards, status, action_box,
                         action_button, editor)

    def cat_of() -> nc.Catalog:
        return catalog(state)

    def query(search_text, sort_key, desc, folder_value, number) -> nc.PageQuery:
        return nc.PageQuery(search=search_text or "", folder=folder_value or "", sort=sort_key or nc.DEFAULT_SORT,
                            descending=bool(desc), page=int(number or 1), page_size=PAGE_SIZE)

    def render(title, search_text, sort_key, desc, folder_value, number, prompt_text, *, reload: bool = False):
        page_id = PAGE_BY_TITLE.get(title, "lora")
        cat = cat_of()
        all_cards = cat.refresh(page_id) if reload else cat.cards(page_id)
        result = nc.select(all_cards, query(search_text, sort_key, desc, folder_value, number))
        folders = [("All", ""), *[(f, f) for f in nc.folders(all_cards)]]
        value = folder_value if any(v == folder_value for _, v in folders) else ""
        info = (f"<span class='extra-count'>{result.total} of {len(all_cards)} · page {result.page}/"
                f"{result.pages}</span>")
        return (cards_html(state, tab, page_id, result, prompt_text, value), gr.update(choices=folders, value=value),
                info)

    inputs = [page, search, sort, descending, folder, page_no, prompt]
    outputs = [cards, folder, status]
    for event in (accordion.expand, page.change, sort.change, descending.change, folder.change, page_no.submit):
        event(render, inputs, outputs, show_progress="hidden", trigger_mode="always_last")
    search.change(render, inputs, outputs, show_progress="hidden", trigger_mode="always_last")
    refresh.click(lambda *a: render(*a, reload=True), inputs, outputs, show_progress="hidden")

    def card_action(action_json, title, search_text, sort_key, desc, folder_value, number, prompt_text,
                    negative_text_value):
        """A card click: toggle its text in the prompts (or select the checkpoint), or open the editor."""
        no = gr.update()
        editor_updates = [no] * 12
        try:
            act = json.loads(action_json or "{}")
            page_id, filename, what = act.get("page"), act.get("filename"), act.get("action")
            if page_id not in nc.PAGES:
                raise nc.CardError(f"unknown page {page_id!r}")
            cat = cat_of()
            card = cat.find(page_id, filename)
        except (ValueError, nc.CardError) as e:
            return [no, no, common.error_html(e), no, *editor_updates]
        if what == "edit":
            meta = card.user_metadata
            tags = ", ".join(f"{html.escape(t)} ({n})" for t, n in card.training_tags[:50])
            table = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                            for k, v in nc.training_table(_lora_metadata(state, card)))
            training_html = (f"<table class='training'>{table}</table>" if table else "") + (
                f"<div class='training-tags'><b>Training tags:</b> {tags}</div>" if tags else "")
            vae_choices = ["Automatic", "None", *(state.vae_registry.names() if page_id == "checkpoints" else [])]
            editor_updates = [
                gr.update(visible=True),
                f"<h3>{html.escape(card.name)}</h3><p>{html.escape(card.filename)}</p>",
                card.filename, page_id, str(meta.get("description") or card.description or ""),
                str(meta.get("sd version") or "Unknown"),
                float(meta.get("preferred weight") or 0.0),
                gr.update(choices=vae_choices, value=str(meta.get("vae") or "Automatic"),
                          visible=page_id == "checkpoints"),
                str(meta.get("activation text") or ""), str(meta.get("negative text") or ""),
                str(meta.get("notes") or ""), training_html,
            ]
            return [no, no, "", no, *editor_updates]
        if page_id == "checkpoints":
            return [no, no, _select_checkpoint(state, card), no, *editor_updates]
        text = cat.prompt(page_id, card)
        separator = state.settings.get("extra_networks_add_text_separator") or " "
        new_prompt = nc.toggle_in_prompt(prompt_text or "", text, separator)
        removed = len(new_prompt) < len(prompt_text or "")
        neg = nc.card_negative_prompt(card)
        new_negative = negative_text_value
        if neg:
            present = neg in (negative_text_value or "")
            if removed == present:  # the negative text follows the card: removed with it, added with it
                new_negative = nc.toggle_in_prompt(negative_text_value or "", neg, separator)
        result = nc.select(cat.cards(page_id), query(search_text, sort_key, desc, folder_value, number))
        return [new_prompt, new_negative, "", cards_html(state, tab, page_id, result, new_prompt, folder_value),
                *editor_updates]

    def action(action_json, *args):
        """The one channel of the cards' clicks: a folder button picks the folder (its change re-renders); card
        clicks go to :func:`card_action`."""
        try:
            act = json.loads(action_json or "{}")
        except ValueError:
            act = {}
        if act.get("action") == "folder":
            return [gr.update()] * 16 + [gr.update(value=str(act.get("folder") or ""))]
        return [*card_action(action_json, *args), gr.update()]

    editor_outputs_fields = [editor_title, edit_file, edit_page, description, sd_version, weight, vae, activation,
                             negative_text, notes, training]
    ui.card_event = action_button.click(
        action, [action_box, page, search, sort, descending, folder, page_no, prompt, negative_prompt],
        [prompt, negative_prompt, status, cards, editor, *editor_outputs_fields, folder], show_progress="hidden",
        js="(a, ...rest) => [window.webuiExtraNetworkAction || '', ...rest]")

    def save_metadata(page_id, filename, desc_text, version, w, vae_name, act, neg, note, *render_args):
        try:
            changes = {"description": desc_text or "", "sd version": version or "Unknown",
                       "activation text": act or "", "negative text": neg or "", "notes": note or ""}
            if page_id == "lora":
                changes["preferred weight"] = float(w or 0.0)
            if page_id == "checkpoints":  # A1111: "Automatic", "None" (no VAE) or a VAE's name, used at load
                changes["vae"] = vae_name or "Automatic"
            cat_of().save_metadata(page_id, filename, changes)
        except (OSError, ValueError) as e:
            return [gr.update(), gr.update(), common.error_html(e), gr.update()]
        html_out, folders, _ = render(nc.PAGES.get(page_id, "Lora"), *render_args)
        return [gr.update(visible=False), html_out, f"<div class='webui-notice'>Saved {html.escape(nc.metadata_path(filename))}</div>",
                folders]

    render_inputs = [search, sort, descending, folder, page_no, prompt]
    save.click(save_metadata, [edit_page, edit_file, description, sd_version, weight, vae, activation, negative_text,
                               notes, *render_inputs], [editor, cards, status, folder], show_progress="hidden")

    def replace_preview(page_id, filename, *args):
        gallery_value, index, info_json = args[:3]
        image = common.gallery_image(gallery_value, int(index) if index is not None and index >= 0 else None)
        if image is None:
            return [gr.update(), common.error_html(ValueError("there is no image in the gallery to use as preview")),
                    gr.update()]
        infotext = image.info.get("parameters") or common.selected_infotext(info_json, index)
        try:
            cat_of().replace_preview(page_id, filename, image, infotext)
        except (OSError, ValueError) as e:
            return [gr.update(), common.error_html(e), gr.update()]
        html_out, folders, _ = render(nc.PAGES.get(page_id, "Lora"), *args[3:])
        return [html_out, f"<div class='webui-notice'>Preview saved beside {html.escape(filename)}</div>", folders]

    def connect_gallery(output) -> None:
        """Wire "Replace preview" to the tab's gallery (built after this section)."""
        replace.click(replace_preview, [edit_page, edit_file, output.gallery, output.selected_index,
                                        output.generation_info, *render_inputs], [cards, status, folder],
                      show_progress="hidden")

    ui.connect_gallery = connect_gallery

    def connect_checkpoint(dropdown) -> None:
        """After a card click, the top bar's checkpoint dropdown shows the loaded checkpoint (a Checkpoints card
        selects one)."""
        from webui.ui.components import current_checkpoint

        ui.card_event.then(lambda: gr.update(value=current_checkpoint(state)), None, [dropdown],
                           show_progress="hidden")

    ui.connect_checkpoint = connect_checkpoint
    cancel.click(lambda: gr.update(visible=False), None, [editor], show_progress="hidden", queue=False)
    return ui


def _lora_metadata(state, card: nc.Card) -> dict:
    if card.page != "lora" or state.loras is None:
        return {}
    info = next((x for x in state.loras.list() if x.path == card.filename), None)
    return info.metadata if info is not None else {}


def _select_checkpoint(state, card: nc.Card) -> str:
    """A checkpoint card selects that checkpoint (A1111 ``selectCheckpoint``), loaded on the worker as the top bar
    does; its preferred VAE (sidecar "vae") is used as A1111's resolve_vae_from_user_metadata decides."""
    from webui.core.options import switch_checkpoint

    title = card.name
    try:
        future = common.submit(state, "load-model", lambda p: switch_checkpoint(state.engine, state.settings, title))
        future.result()
    except Exception as e:  # noqa: BLE001 -- any load failure is shown on the page, as the top bar does
        return common.error_html(e)
    return f"<div class='webui-notice'>Checkpoint: {html.escape(title)}</div>"
