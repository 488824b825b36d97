"""The Script interface in the shape of A1111's ``modules.scripts.Script``, and the runner that gives scripts their
positional args, runs the selected one and calls the always-on ones from the hooks of ``hooks.py``.

A script says what it is with ``title()`` and ``show(is_img2img)`` (True: in the Script dropdown of that tab,
``AlwaysVisible``: always on, False: not on that tab), declares its controls with ``ui(is_img2img)`` -- a list of
:class:`ScriptArg` (label, default, limits, choices: what ``/sdapi/v1/script-info`` lists and what the UI builds
controls from) -- and receives their values positionally: ``run(p, *args)`` for the selected script, ``setup`` /
``before_process`` / ``process`` / ``before_process_batch`` / ``process_batch`` / ``postprocess_batch`` /
``postprocess_batch_list`` / ``on_mask_blend`` / ``post_sample`` / ``postprocess_image`` / ``postprocess_maskoverlay``
/ ``postprocess`` / ``before_hr`` (``p, *args``) for the always-on ones. ``args_from`` / ``args_to`` are the script's slice of the job's
``script_args`` (index 0 is the selected script: 0 for None, else 1 + its index among the selectable ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webui.plugins.hooks import hookimpl


class _AlwaysVisible:
    def __repr__(self) -> str:
        return "AlwaysVisible"


#: ``show()`` returns this for always-on scripts (A1111's ``scripts.AlwaysVisible``).
AlwaysVisible = _AlwaysVisible()


class ScriptError(ValueError):
    """A script's argument is unusable (unknown axis type, unparsable range, unknown checkpoint, bad line): the
    message names the script, the argument and the valid choices; the API answers it with a 4xx."""

    client_error = True

    def __init__(self, script: str, message: str):
        super().__init__(f"{script}: {message}")
        self.script = script


@dataclass
class ScriptArg:
    """One positional argument of a script: what ``/sdapi/v1/script-info`` lists (A1111 ``ScriptArg``) and what the
    UI builds a control from. ``kind``: textbox, number, slider, checkbox, dropdown, radio, checkboxgroup, image."""

    label: str
    value: Any = None
    kind: str = "textbox"
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: list | None = None
    lines: int = 1
    multiselect: bool = False
    type: str = "value"  # dropdown/radio: "index" sends the choice's position, as gradio's type="index"
    visible: bool = True
    info: str | None = None
    # choices that are the server's live lists, resolved when the UI is built and when /script-info answers (A1111
    # builds them from sd_models / shared.sd_upscalers when its UI is made): "checkpoints" (checkpoint titles,
    # after the static ``choices``) or "upscalers" (every upscaler's name)
    choices_from: str | None = None

    def api_info(self, state: Any = None) -> dict:
        return {"label": self.label, "value": self.value, "minimum": self.minimum, "maximum": self.maximum,
                "step": self.step, "choices": self.live_choices(state)}

    def live_choices(self, state: Any = None) -> list | None:
        """The choices with the live list of ``choices_from`` (from ``state``, an AppState) added; the static ones
        when there is no state."""
        if self.choices_from is None or state is None:
            return self.choices
        if self.choices_from == "checkpoints":
            return [*(self.choices or []), *state.registry.titles()]
        if self.choices_from == "upscalers" and getattr(state, "upscalers", None) is not None:
            return [u.name for u in state.upscalers.list(state.settings)]
        return self.choices


class Script:
    """Base class of every script (A1111 ``modules.scripts.Script``). Override what the script needs."""

    filename: str | None = None
    args_from: int | None = None
    args_to: int | None = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    setup_for_ui_only = False  # A1111: setup() runs only for requests made in the UI
    infotext_fields: list | None = None  # [(arg index or ScriptArg, infotext key)] for pasting
    paste_field_names: list | None = None
    # the controls the page builds put themselves in an accordion (an A1111 extension's ui() that makes one): the
    # page then gives the always-on script a plain group, as A1111, not an accordion named after the script
    own_accordion = False
    no_controls = False  # ui() returned None (not an empty list), set by the runner: A1111 then keeps its class name

    def title(self) -> str:
        """The name in the Script dropdown and in ``script_name`` / ``alwayson_scripts`` (case-insensitive)."""
        return type(self).__name__

    def show(self, is_img2img: bool):
        return True

    def ui(self, is_img2img: bool) -> list[ScriptArg]:
        return []

    def script_arg_list(self, is_img2img: bool) -> list[ScriptArg] | None:
        """The script's controls as ScriptArgs (what the runner and /script-info read): ``ui()`` here; A1111
        extension scripts (``webui.compat``) turn the gradio components their ui() makes into ScriptArgs."""
        return self.ui(is_img2img)

    def page_controls(self, is_img2img: bool, args: list[ScriptArg]) -> list | None:
        """The script's controls made on the page by the script itself, one gradio component per ScriptArg of
        ``args``, or None: the page builds them from ``args``. Called while the page is built, inside the script's
        group or accordion; A1111 extension scripts (``webui.compat``) call their ui() here."""
        return None

    def run(self, p, *args):
        """The selected script's job: change ``p`` and call ``process_images(p)`` as often as it needs; return a
        Processed (or None, and the job returns nothing)."""
        return None

    def setup(self, p, *args):
        pass

    def has_setup(self) -> bool:
        """Whether setup() does anything: a job runs through a script ``p`` only when some always-on script needs
        it (plain requests go straight to the engine)."""
        return type(self).setup is not Script.setup

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        pass

    def postprocess_image(self, p, pp, *args):
        pass

    def on_mask_blend(self, p, mba, *args):
        pass

    def post_sample(self, p, ps, *args):
        pass

    def postprocess_maskoverlay(self, p, ppmo, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def before_hr(self, p, *args):
        pass

    def describe(self) -> str:
        return ""

    def elem_id(self, item_id: str) -> str:
        tab = "img2img" if self.is_img2img else "txt2img"
        title = "".join(c if c.isalnum() else "_" for c in self.title().lower())
        return f"script_{tab}_{title}_{item_id}"


class ScriptRunner:
    """The scripts of one tab (A1111 ``scripts_txt2img`` / ``scripts_img2img``): their arg positions, the
    selectable titles, the defaults of a job's ``script_args``, and running the selected script."""

    def __init__(self, scripts: list[Script], is_img2img: bool):
        self.is_img2img = is_img2img
        self._build(list(scripts))

    def extend(self, scripts: list[Script]) -> list[Script]:
        """Add scripts after the present ones (an extension's, loaded after the built-ins, as A1111 orders them)
        and recompute every position. A script whose ``show`` or ``ui`` raises is left out and returned."""
        return self._build([*self._given, *scripts])

    def _build(self, scripts: list[Script]) -> list[Script]:
        self._given = scripts
        failed: list[Script] = []
        self.scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.selectable_scripts: list[Script] = []
        self.inputs: list[ScriptArg | None] = [None]  # 0: the Script dropdown
        is_img2img = self.is_img2img
        for script in scripts:
            script.is_txt2img, script.is_img2img = not is_img2img, is_img2img
            try:
                visibility = script.show(is_img2img)
            except Exception as e:
                if getattr(script, "extension", None) is None:
                    raise
                script.extension.report("script show()", script.filename, e)
                failed.append(script)
                continue
            if visibility is AlwaysVisible:
                script.alwayson = True
                self.alwayson_scripts.append(script)
            elif visibility:
                script.alwayson = False
                self.selectable_scripts.append(script)
            else:
                continue
            self.scripts.append(script)
        for script in [*self.alwayson_scripts, *self.selectable_scripts]:  # A1111's order of ui creation
            try:
                made = script.script_arg_list(is_img2img)
                script.no_controls = made is None  # read by /scripts: ui() is not called again for every request
                args = list(made or [])
            except Exception as e:
                if getattr(script, "extension", None) is None:
                    raise
                # an extension's ui() that fails (or a control we cannot read): reported, the script left out
                script.extension.report("script ui()", script.filename, e)
                failed.append(script)
                args = None
            if args is None:
                continue
            script.args_from = len(self.inputs)
            self.inputs.extend(args)
            script.args_to = len(self.inputs)
        if failed:
            self.scripts = [s for s in self.scripts if s not in failed]
            self.alwayson_scripts = [s for s in self.alwayson_scripts if s not in failed]
            self.selectable_scripts = [s for s in self.selectable_scripts if s not in failed]
            self._given = [s for s in self._given if s not in failed]
        return failed

    @property
    def titles(self) -> list[str]:
        return [s.title() for s in self.selectable_scripts]

    def find(self, title: str | None) -> Script | None:
        if not title:
            return None
        lowered = title.lower()
        return next((s for s in self.scripts if s.title().lower() == lowered), None)

    def selectable_index(self, title: str) -> int:
        """1 + the script's index among the selectable ones (0 is "None"), as A1111's dropdown value."""
        lowered = title.lower()
        for i, script in enumerate(self.selectable_scripts):
            if script.title().lower() == lowered:
                return i + 1
        raise KeyError(title)

    def default_args(self) -> list:
        return [0, *[arg.value if arg is not None else None for arg in self.inputs[1:]]]

    def paste_fields(self, *, alwayson_only: bool = False) -> list:
        """The scripts' ``infotext_fields`` as paste-table entries (``webui.core.io.paste.PasteField``) named
        ``script_arg_<position>`` (the tab's form names), converted to the type of the arg's default -- what A1111
        adds to a tab's paste fields from each script, and what its API's ``infotext`` fills (``mentioned_script_args``).
        An entry names its arg by position within the script, by the ScriptArg itself, or (A1111 extensions) by the
        gradio component its ui() returned."""
        from webui.core.io.paste import Number, PasteField

        out = []
        for script in self.alwayson_scripts if alwayson_only else [*self.alwayson_scripts, *self.selectable_scripts]:
            if script.args_from is None:
                continue
            own = self.inputs[script.args_from:script.args_to]
            # an A1111 extension names its gradio components: those of its latest ui() call (``controls``)
            controls = list(getattr(script, "controls", None) or ())
            for target, key in script.infotext_fields or ():
                if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(own):
                    index = script.args_from + target
                else:
                    index = next((script.args_from + i for i, a in enumerate(own) if a is target), None)
                    if index is None:
                        index = next((script.args_from + i for i, c in enumerate(controls) if c is target), None)
                if index is None or not isinstance(key, str) and not callable(key):
                    continue
                arg = self.inputs[index]
                default = arg.value if arg is not None else None
                kind = type(default) if isinstance(default, (bool, int, float, str)) else str
                if kind is int and arg.kind == "slider" and float(arg.step or 1) != int(arg.step or 1):
                    kind = Number  # a fractional slider whose default is written as an int: 0.25 stays 0.25
                out.append(PasteField(f"script_arg_{index}", key, kind))
        return out

    def mentioned_args(self, params: dict) -> dict[int, Any]:
        """A1111 apply_infotext's ``mentioned_script_args``: {position: value} of the always-on scripts' args that
        the parsed infotext ``params`` names."""
        from webui.core.io.paste import paste_values

        values = paste_values(params, self.paste_fields(alwayson_only=True))
        return {int(name.removeprefix("script_arg_")): value for name, value in values.items()}

    def script_args(self, selected: str | None, selected_args, alwayson: dict[str, list],
                    mentioned: dict[int, Any] | None = None) -> tuple:
        """A1111 api.init_script_args: the defaults, the values an infotext mentioned (``mentioned``), the selected
        script's args over its slice (missing trailing args keep their defaults), each always-on script's args over
        its own."""
        args = self.default_args()
        for index, value in (mentioned or {}).items():
            if 0 < index < len(args):
                args[index] = value
        if selected:
            script = self.find(selected)
            args[0] = self.selectable_index(selected)
            given = list(selected_args or [])[: script.args_to - script.args_from]
            args[script.args_from : script.args_from + len(given)] = given
        for title, values in alwayson.items():
            script = self.find(title)
            if script is None or not script.alwayson:
                continue
            given = list(values or [])[: script.args_to - script.args_from]
            args[script.args_from : script.args_from + len(given)] = given
        return tuple(args)

    def selected(self, script_args) -> Script | None:
        index = int(script_args[0] or 0) if script_args else 0
        return self.selectable_scripts[index - 1] if 0 < index <= len(self.selectable_scripts) else None

    def run(self, p, script_args):
        """A1111 ScriptRunner.run: the selected script's run(p, *its args), or None when none is selected."""
        script = self.selected(script_args)
        if script is None:
            return None
        return script.run(p, *script_args[script.args_from : script.args_to])

    def setup(self, p, script_args, *, is_ui: bool) -> None:
        """A1111 setup_scrips: each always-on script's setup(p, *args); ``setup_for_ui_only`` ones in the UI only."""
        for script in self.alwayson_scripts:
            if script.setup_for_ui_only and not is_ui:
                continue
            script.setup(p, *script_args[script.args_from : script.args_to])


class AlwaysOnScripts:
    """The plugin that calls the always-on scripts from the generation hooks with their args, which travel in the
    request's ``extension_args["script_args"]`` (the job's whole positional tuple, as A1111's p.script_args)."""

    def __init__(self, txt2img: ScriptRunner, img2img: ScriptRunner):
        self.runners = {False: txt2img, True: img2img}

    def _each(self, p, method: str, *extra, **kwargs):
        script_args = p.request.extension_args.get("script_args")
        if not script_args:
            return
        for script in self.runners[p.is_img2img].alwayson_scripts:
            args = script_args[script.args_from : script.args_to]
            extension = getattr(script, "extension", None)
            if extension is None:
                getattr(script, method)(p, *extra, *args, **kwargs)
                continue
            try:  # an A1111 extension's script: A1111 reports its failure and goes on with the others
                getattr(script, method)(p, *extra, *args, **kwargs)
            except Exception as e:
                if getattr(e, "client_error", False):
                    raise
                extension.report(f"script {method}()", script.filename, e)

    @hookimpl
    def before_process(self, p):
        self._each(p, "before_process")

    @hookimpl
    def process(self, p):
        self._each(p, "process")

    @hookimpl
    def before_process_batch(self, p, batch_number, prompts, seeds, subseeds):
        self._each(p, "before_process_batch", batch_number=batch_number, prompts=prompts, seeds=seeds,
                   subseeds=subseeds)

    @hookimpl
    def process_batch(self, p, batch_number, prompts, seeds, subseeds):
        self._each(p, "process_batch", batch_number=batch_number, prompts=prompts, seeds=seeds, subseeds=subseeds)

    @hookimpl
    def postprocess_batch(self, p, images, batch_number):
        self._each(p, "postprocess_batch", images=images, batch_number=batch_number)

    @hookimpl
    def postprocess_batch_list(self, p, pp, batch_number):
        self._each(p, "postprocess_batch_list", pp, batch_number=batch_number)

    @hookimpl
    def postprocess_image(self, p, pp):
        self._each(p, "postprocess_image", pp)

    @hookimpl
    def on_mask_blend(self, p, mba):
        self._each(p, "on_mask_blend", mba)

    @hookimpl
    def post_sample(self, p, ps):
        self._each(p, "post_sample", ps)

    @hookimpl
    def postprocess_maskoverlay(self, p, ppmo):
        self._each(p, "postprocess_maskoverlay", ppmo)

    @hookimpl
    def postprocess(self, p, processed):
        self._each(p, "postprocess", processed)

    @hookimpl
    def before_hr(self, p):
        self._each(p, "before_hr")


def run_generation(engine, runner: ScriptRunner, request, progress=None):
    """One txt2img/img2img job with its scripts (A1111 txt2img/img2img with ``scripts.run`` / ``process_images``):
    the selected script runs ``p`` when there is one, else the engine runs the request. ``request.extension_args
    ["script_args"]`` is the job's positional tuple (``ScriptRunner.script_args``). The always-on scripts' setup
    runs for a script's ``p``; Refiner/Seed/Sampler are ``setup_for_ui_only`` and skipped, as in A1111's API: our
    tabs put their controls in the request's own fields."""
    from webui.core.generation.processing import Processing, process_images

    if runner is None:
        return engine.generate(request, progress)
    script_args = tuple(request.extension_args.get("script_args") or ())
    selected = runner.selected(script_args)
    setups = [s for s in runner.alwayson_scripts if not s.setup_for_ui_only and s.has_setup()]
    if selected is None and not setups:
        return engine.generate(request, progress)
    p = Processing(request, engine=engine, progress=progress)
    p.script_args = script_args
    runner.setup(p, script_args, is_ui=False)
    processed = runner.run(p, script_args) if selected is not None else None
    if processed is None:
        processed = process_images(p)
    return processed.to_result(request)
