"""Fixture extensions in A1111's format, written by the tests into a data dir's extensions/ folder.

- ``seed-prompt``: an always-on script ("Seed prompt") whose ``process`` rewrites ``p.all_prompts`` from
  ``p.all_seeds`` and writes ``p.extra_generation_params``; an option added in ``on_ui_settings``; a launch flag
  added by ``preload.py``; a javascript file and a style.css.
- ``twice``: a selectable script ("Twice") whose ``run`` calls ``process_images`` twice (the seed, then seed + 1).
- ``routes-and-tab``: a FastAPI route added in ``on_app_started`` and a tab added in ``on_ui_tabs``.
- ``broken``: a script with a syntax error.

``write_page_events`` adds ``page-events``: an always-on script ("Page events", on both tabs, in an InputAccordion
that switches it on) and a selectable one ("Page events script", txt2img) whose ui() wires events between its own
components (a checkbox that shows a slider in a row, a button that fills a textbox) and whose process / run write
the values they get into the infotext.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

PRELOAD = '''
def preload(parser):
    parser.add_argument("--seed-prompt-word", type=str, default="seed",
                        help="the word the Seed prompt extension writes before each image's seed")
'''

SEED_PROMPT = '''
import gradio as gr

from modules import script_callbacks, scripts, shared


class SeedPrompt(scripts.Script):
    def title(self):
        return "Seed prompt"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion("Seed prompt", open=False):
            enabled = gr.Checkbox(label="Append the seed", value=False)
            mark = gr.Textbox(label="Mark", value="M")
        return [enabled, mark]

    def process(self, p, enabled, mark):
        from modules.processing import StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img

        if not enabled:
            return
        assert isinstance(p, StableDiffusionProcessingTxt2Img) != isinstance(p, StableDiffusionProcessingImg2Img)
        assert isinstance(p, StableDiffusionProcessingImg2Img) == self.is_img2img
        word = shared.cmd_opts.seed_prompt_word
        suffix = shared.opts.seed_prompt_suffix
        p.all_prompts = [f"{prompt}, {word} {seed} {suffix}" for prompt, seed in zip(p.all_prompts, p.all_seeds)]
        p.extra_generation_params["Seed prompt"] = mark


CHANGES = []


def on_ui_settings():
    section = ("seed_prompt", "Seed prompt")
    shared.opts.add_option("seed_prompt_suffix", shared.OptionInfo(
        "tail", "Text after the seed", section=section).info("appended to every prompt").needs_reload_ui())
    shared.opts.onchange("seed_prompt_suffix", lambda: CHANGES.append(shared.opts.seed_prompt_suffix), call=False)


script_callbacks.on_ui_settings(on_ui_settings)
'''

TWICE = '''
from modules import processing, scripts
from modules.processing import Processed, process_images

BASEDIR = scripts.basedir()  # this extension's folder while its scripts are imported (A1111 basedir())


class Twice(scripts.Script):
    def title(self):
        return "Twice"

    def show(self, is_img2img):
        return not is_img2img

    def ui(self, is_img2img):
        import gradio as gr

        return [gr.Slider(label="Seed step", minimum=1, maximum=10, step=1, value=1)]

    def run(self, p, step):
        processing.fix_seed(p)
        first = process_images(p)
        p.seed = p.seed + int(step)
        second = process_images(p)
        return Processed(p, first.images + second.images, first.seed, first.info,
                         all_seeds=first.all_seeds + second.all_seeds,
                         all_prompts=first.all_prompts + second.all_prompts,
                         infotexts=first.infotexts + second.infotexts)
'''

ROUTES_AND_TAB = '''
import gradio as gr

from modules import script_callbacks


def on_app_started(demo, app):
    @app.get("/routes-and-tab/hello")
    def hello():
        return {"hello": "world", "with_ui": demo is not None}


def on_ui_tabs():
    with gr.Blocks(analytics_enabled=False) as tab:
        gr.Markdown("Hello from an extension tab", elem_id="routes_and_tab_text")
    return [(tab, "Extension tab", "routes_and_tab")]


script_callbacks.on_app_started(on_app_started)
script_callbacks.on_ui_tabs(on_ui_tabs)
'''

BROKEN = '''
def broken(:
    pass
'''


PAGE_EVENTS = '''
import gradio as gr

from modules import scripts
from modules.processing import process_images
from modules.ui_components import InputAccordion


def controls(prefix):
    """A checkbox that shows a slider (in a row), and a button that fills a textbox: events between ui()'s own
    components, which only work when ui() runs inside the page."""
    checkbox = gr.Checkbox(label=f"{prefix} show strength", value=False, elem_id=f"{prefix}_show")
    with gr.Row():
        slider = gr.Slider(label=f"{prefix} strength", minimum=0, maximum=10, step=1, value=3, visible=False,
                           elem_id=f"{prefix}_strength")
    text = gr.Textbox(label=f"{prefix} text", value="", elem_id=f"{prefix}_text")
    button = gr.Button("Fill", elem_id=f"{prefix}_fill")
    checkbox.change(lambda v: gr.update(visible=v), checkbox, slider)
    button.click(lambda: "filled", None, text)
    return [checkbox, slider, text]


def write_values(p, name, show, strength, text):
    p.extra_generation_params[name] = f"{bool(show)}/{int(strength)}/{text}"


class PageEvents(scripts.Script):
    def title(self):
        return "Page events"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        # A1111's InputAccordion: open is on (its value, a bool)
        with InputAccordion(False, label="Page events", elem_id=self.elem_id("enabled")) as enabled:
            return [enabled, *controls("page_events_" + ("img2img" if is_img2img else "txt2img"))]

    def process(self, p, enabled, show, strength, text):
        if enabled:
            write_values(p, "Page events", show, strength, text)


class PageEventsScript(scripts.Script):
    def title(self):
        return "Page events script"

    def show(self, is_img2img):
        return not is_img2img

    def ui(self, is_img2img):
        return controls("page_script")

    def run(self, p, show, strength, text):
        write_values(p, "Page events script", show, strength, text)
        return process_images(p)
'''


def write_page_events(data_dir: Path) -> Path:
    """The ``page-events`` fixture extension (see the module's docstring) in ``data_dir``'s extensions/."""
    path = Path(data_dir) / "extensions" / "page-events" / "scripts" / "page_events.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(PAGE_EVENTS).lstrip(), encoding="utf-8")
    return path


def write_extensions(data_dir: Path) -> Path:
    root = Path(data_dir) / "extensions"
    files = {
        "seed-prompt/preload.py": PRELOAD,
        "seed-prompt/scripts/seed_prompt.py": SEED_PROMPT,
        "seed-prompt/javascript/seed_prompt.js": "window.seedPromptLoaded = true;\n",
        "seed-prompt/style.css": "#seed_prompt_marker { color: rgb(1, 2, 3); }\n",
        "twice/scripts/twice.py": TWICE,
        "routes-and-tab/scripts/routes_and_tab.py": ROUTES_AND_TAB,
        "broken/scripts/broken.py": BROKEN,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return root
