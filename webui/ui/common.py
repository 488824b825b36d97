"""Pieces every tab shares: named component forms, running a job on the shared queue while showing its progress, error
and infotext HTML, token counters, infotext pasting.

Nothing here generates images: a tab builds a GenerationRequest (its ``to_request``) and :func:`run_on_queue` submits a
job to ``state.queue`` -- the same queue, worker, progress tracker and interrupt as the /sdapi/v1 API.
"""

from __future__ import annotations

import concurrent.futures
import html
import io
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from webui.core import queue as q
from webui.core.io.files import atomic_write

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------------
# named components
# --------------------------------------------------------------------------------------------------------------------


class Form:
    """A tab's components by name. Event handlers take gradio's set-of-inputs dict ``{component: value}`` and turn it
    into ``{name: value}`` with :meth:`named`, which is what each tab's ``to_request(values)`` reads."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def add(self, name: str, component):
        if name in self.components:
            raise ValueError(f"component name {name!r} used twice")
        self.components[name] = component
        return component

    def __getitem__(self, name: str):
        return self.components[name]

    def __contains__(self, name: str) -> bool:
        return name in self.components

    def inputs(self, *names: str) -> set:
        """The components (all, or the named ones) as a set: gradio then passes one dict to the handler."""
        return {self.components[n] for n in (names or self.components)}

    def named(self, values: dict) -> dict[str, Any]:
        by_id = {id(c): n for n, c in self.components.items()}
        return {by_id[id(c)]: v for c, v in values.items() if id(c) in by_id}


# --------------------------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------------------------


def png_bytes(image) -> bytes:
    """A PIL image as PNG bytes, the form images take inside a GenerationRequest (level 1: cheap to encode)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def open_image(value):
    """A gradio image value (PIL image, file path or None) as a PIL image or None."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        from PIL import Image

        with Image.open(value) as im:
            im.load()
            return im.copy() if im.info else im
    return value


# --------------------------------------------------------------------------------------------------------------------
# HTML bits
# --------------------------------------------------------------------------------------------------------------------


def plaintext_to_html(text: str, classname: str | None = None) -> str:
    """A1111 ``ui_common.plaintext_to_html``: one <p> per line, escaped."""
    content = "<br>\n".join(html.escape(x) for x in (text or "").split("\n"))
    return f"<p class='{classname}'>{content}</p>" if classname else f"<p>{content}</p>"


def error_html(exc: BaseException) -> str:
    """What the page shows for a failed job: a readable message (A1111 shows the error text under the gallery)."""
    if isinstance(exc, q.TaskCancelled):
        text = "Interrupted before it started."
    elif type(exc).__name__ == "OutOfMemoryError":
        text = (f"Out of memory: {exc}. Try a smaller size or batch, or launch with --medvram or --lowvram (parts "
                "of the model kept off the GPU until they run).")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return f"<div class='webui-error'><h3>Error</h3>{plaintext_to_html(text)}</div>"


def info_html(infotext: str, comments: list[str] | None = None) -> str:
    """The infotext under the gallery (A1111 ``generation_info`` html): the parameters, then the job's comments."""
    parts = [f"<div class='infotext'>{plaintext_to_html(infotext)}</div>"]
    for c in comments or ():
        parts.append(f"<div class='comments'>{plaintext_to_html(c)}</div>")
    return "".join(parts)


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    seconds = round(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60:02d}:{seconds % 60:02d}"


def progress_html(state, task_id: str) -> str:
    """The progress bar of one task, from the queue's tracker (the same numbers as /internal/progress)."""
    status = state.queue.task_status(task_id)
    tid = html.escape(task_id, quote=True)  # read by javascript/progress_restore.js to follow the task after a reload
    if status.status == q.QUEUED:
        return (f"<div class='webui-progress' data-status='queued' data-task-id='{tid}'><div class='progress-text'>"
                f"In queue: {status.queue_position}/{status.queue_size}</div></div>")
    tracker = state.queue.progress
    if status.status != q.RUNNING or tracker.current_task != task_id:
        return (f"<div class='webui-progress' data-status='waiting' data-task-id='{tid}'><div class='progress-text'>"
                "Waiting...</div></div>")
    progress, eta = tracker.internal_progress()
    pct = int(progress * 100)
    eta_text = _fmt_eta(eta)
    text = f"{pct}%" + (f" ETA: {eta_text}" if eta_text else "")
    # A1111 progressbar.js: a multi-line textinfo (the trainers' HTML report) is not put into the bar
    if tracker.textinfo and "\n" not in tracker.textinfo:
        text += f" {html.escape(tracker.textinfo)}"
    return (f"<div class='webui-progress' data-status='running' data-progress='{pct}' data-task-id='{tid}'>"
            f"<div class='progress-bar' style='width:{pct}%'></div><div class='progress-text'>{text}</div></div>")


# --------------------------------------------------------------------------------------------------------------------
# running a job on the shared queue
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Tick:
    """One update while a job runs: the progress HTML and, when a new one exists, the live preview image."""

    html: str
    preview: Any = None


def submit(state, kind: str, fn: Callable, task_id: str | None = None):
    """Queue ``fn(progress)`` on the one worker (A1111's UI names the job after its task id)."""
    task_id = task_id or q.new_task_id(kind)
    return state.queue.submit(kind, fn, task_id, job=task_id)


def watch(state, future, *, previews: bool = True) -> Iterator[Tick]:
    """Yield progress updates until ``future`` is done, every ``live_preview_refresh_period`` ms (at most 1 s apart).

    The live preview is the tracker's ``current_image`` (made by the worker every ``show_progress_every_n_steps``
    steps), sent only when its id changed and only while this task is the one running.
    """
    period = min(1.0, max(0.2, float(state.settings.get("live_preview_refresh_period") or 1000) / 1000))
    last_preview = -1
    tracker = state.queue.progress
    while not future.done():
        preview = None
        if previews and tracker.current_task == future.task_id and tracker.id_live_preview != last_preview \
                and tracker.current_image is not None:
            last_preview = tracker.id_live_preview
            preview = tracker.current_image
        yield Tick(progress_html(state, future.task_id), preview)
        concurrent.futures.wait([future], timeout=period)


# --------------------------------------------------------------------------------------------------------------------
# token counters (A1111 ui.update_token_counter / model_hijack.get_prompt_lengths)
# --------------------------------------------------------------------------------------------------------------------


CHUNK_LENGTH = 75


def count_tokens(tokenizer, text: str, steps: int, *, is_positive: bool = True, emphasis: str = "Original",
                 comma_padding_backtrack: int = 20) -> tuple[int, int]:
    """A1111 ``update_token_counter``: (token count, target length) of the longest prompt of the schedule.

    Extra-network tags are removed; AND splits a positive prompt; each scheduled text is tokenised in 75-token
    chunks (BREAK, comma backtracking) and counts 75 per full chunk plus the tokens of the last one; the target is
    the next multiple of 75. Embedding names count as their words here (A1111 counts the embedding's vectors).
    """
    from webui.core.generation import prompts as pp
    from webui.core.generation.conditioning import tokenize_chunks

    try:
        text, _ = pp.parse_extra_networks(text)
        flat = pp.get_multicond_prompt_list([text])[1] if is_positive else [text]
        schedules = pp.get_learned_conditioning_prompt_schedules(flat, steps)
    except Exception:
        schedules = [[(steps, text)]]
    best = 0
    for schedule in schedules:
        for _, prompt in schedule:
            parts = pp.parse_prompt_attention(prompt) if emphasis != "None" else [[prompt, 1.0]]
            chunks = tokenize_chunks(tokenizer, [(t, w) for t, w in parts], comma_padding_backtrack)
            last = chunks[-1].tokens[1:-1]
            in_last = next((i for i, t in enumerate(last) if t == tokenizer.eos_token_id), len(last))
            best = max(best, CHUNK_LENGTH * (len(chunks) - 1) + in_last)
    return best, math.ceil(max(best, 1) / CHUNK_LENGTH) * CHUNK_LENGTH


def token_counter_html(state, text: str, steps: Any, styles: list | None = None, *, is_positive: bool = True) -> str:
    from webui.core.models.tokenizers import clip_tokenizer

    if state.settings.get("disable_token_counters"):
        return ""
    try:
        tokenizer = clip_tokenizer(state.engine.paths.tokenizer_dir)
        count, target = count_tokens(tokenizer, text or "", int(steps or 1), is_positive=is_positive,
                                     emphasis=state.settings.get("emphasis"),
                                     comma_padding_backtrack=int(state.settings.get("comma_padding_backtrack")))
    except Exception as e:  # a counter must never break typing
        log.warning("token counter failed: %s", e)
        return ""
    return f"<span class='token-count'>{count}/{target}</span>"


# --------------------------------------------------------------------------------------------------------------------
# pasting infotext (A1111 infotext_utils.connect_paste)
# --------------------------------------------------------------------------------------------------------------------


def parse_infotext(state, text: str) -> dict:
    """A1111 ``parse_generation_parameters`` with the options that steer it, then the built-in paste callbacks."""
    from webui.core.io.infotext import infotext_pasted, parse_generation_parameters

    styles = state.styles
    params = parse_generation_parameters(
        text,
        skip_fields=state.settings.get("infotext_skip_pasting") or (),
        infotext_styles=state.settings.get("infotext_styles"),
        extract_styles=styles.extract_styles_from_prompt if styles is not None and styles.list() else None,
        use_old_hires_fix_width_height=bool(state.settings.get("use_old_hires_fix_width_height")),
    )
    loras = state.loras
    alias = None
    if loras is not None and hasattr(loras, "alias_for_hash"):
        alias = loras.alias_for_hash
    params = infotext_pasted(params, alias)
    if state.plugins is not None:
        state.plugins.call("on_infotext_pasted", infotext=text, params=params)  # A1111 infotext_pasted_callback
    return params


def last_generation_text(state) -> str:
    """A1111's paste with an empty prompt box reads params.txt (the last generation) unless --no-prompt-history or
    --hide-ui-dir-config."""
    cfg = state.config
    if cfg.no_prompt_history or cfg.hide_ui_dir_config:
        return ""
    path = os.path.join(cfg.data_dir, "params.txt")
    try:
        with open(path, encoding="utf8") as f:
            return f.read()
    except OSError:
        return ""


def write_last_generation(state, text: str) -> None:
    """Keep the last generation's infotext in params.txt, as A1111's process_images does (unless
    --no-prompt-history), so "paste" with an empty prompt box can read it back."""
    if state.config.no_prompt_history or not text:
        return
    path = os.path.join(state.config.data_dir, "params.txt")
    try:
        atomic_write(path, text)
    except OSError as e:
        log.warning("could not write %s: %s", path, e)


# --------------------------------------------------------------------------------------------------------------------
# generation results
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ShownResult:
    """What a generation tab shows: gallery images, the generation info JSON kept for later clicks, the infotext."""

    images: list = field(default_factory=list)
    info_json: str = ""
    html: str = ""


def shown_result(state, result) -> ShownResult:
    info = dict(result.info)
    index = int(info.get("index_of_first_image", 0))
    images = [] if state.settings.get("do_not_show_images") else list(result.images)
    text = result.infotexts[index] if len(result.infotexts) > index else (result.infotexts[0] if result.infotexts else "")
    info_json = json.dumps({"infotexts": list(result.infotexts), "index_of_first_image": index,
                            "comments": info.get("comments") or [], "seed": info.get("seed"),
                            "all_seeds": info.get("all_seeds")})
    return ShownResult(images=images, info_json=info_json, html=info_html(text, _comments(info)))


def _comments(info: dict) -> list[str]:
    c = info.get("comments")
    if isinstance(c, str):
        return [c] if c else []
    return list(c or [])


def selected_infotext(info_json: str, index: int | None) -> str:
    """The infotext of gallery image ``index`` (A1111 ``update_generation_info``); the grid's when it is selected."""
    try:
        info = json.loads(info_json or "{}")
    except ValueError:
        return ""
    texts = info.get("infotexts") or []
    if not texts:
        return ""
    if index is None or index < 0 or index >= len(texts):
        index = int(info.get("index_of_first_image", 0))
    return texts[min(index, len(texts) - 1)]


def gallery_image(gallery_value, index: int | None):
    """The selected gallery image (else the first non-grid one, else the first) as a PIL image, or None."""
    if not gallery_value:
        return None
    items = list(gallery_value)
    i = index if index is not None and 0 <= index < len(items) else 0
    item = items[i]
    if isinstance(item, (tuple, list)):
        item = item[0]
    if isinstance(item, dict):
        item = item.get("image", {}).get("path") if isinstance(item.get("image"), dict) else item.get("path")
    return open_image(item)

