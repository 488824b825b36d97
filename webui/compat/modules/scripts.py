"""A1111 ``modules.scripts``: the ``Script`` base class extensions subclass, ``AlwaysVisible``, ``basedir()``, the
hook argument classes, and ``scripts_txt2img`` / ``scripts_img2img`` (the running app's script runners).

An extension's Script is our :class:`webui.plugins.scripts.Script` with A1111's extras. Its ``ui(is_img2img)``
returns gradio components and runs twice, as the two halves of A1111's ``create_script_ui``:

- at start, inside a scratch ``gr.Blocks``: the components are read back as our ``ScriptArg`` list (label, default,
  limits, choices). That list is what the API's /script-info lists and how ``script_args`` are placed, with or
  without a page (``--nowebui``);
- when the page is built (``page_controls``), inside the page, in the script's group (a selectable script) or its
  accordion (an always-on one; a plain group when ui() makes its own accordion or ``InputAccordion``, as in A1111).
  The layout it makes and the events it wires between its components are the page's, and its components are the
  controls Generate reads. When that second call raises, or returns other controls than the first (their number or
  kinds: a ui() that is not deterministic), the problem is recorded on the extension and the page builds the
  script's controls from the ScriptArg list instead, with none of the extension's events (docs/extensions.md).
"""

from __future__ import annotations


from pipelines.denoiser import MaskBlendArgs as MaskBlendArgs  # A1111's names, re-exported for extensions
from webui.compat import binding
from webui.core.generation.engine import PostprocessBatchListArgs as PostprocessBatchListArgs
from webui.core.generation.engine import PostprocessImageArgs as PostprocessImageArgs
from webui.core.generation.engine import PostprocessMaskOverlayArgs
from webui.core.generation.engine import PostSampleArgs as PostSampleArgs
from webui.plugins import scripts as _ours
from webui.plugins.scripts import AlwaysVisible as AlwaysVisible
from webui.plugins.scripts import ScriptArg

#: A1111 spells this one PostProcessMaskOverlayArgs
PostProcessMaskOverlayArgs = PostprocessMaskOverlayArgs

_MODULE = "modules.scripts"

# gradio class name -> ScriptArg kind
_KINDS = {
    "slider": "slider", "number": "number", "checkbox": "checkbox", "inputaccordion": "checkbox",
    "dropdown": "dropdown", "radio": "radio", "checkboxgroup": "checkboxgroup", "image": "image",
    "html": "html", "file": "file", "textbox": "textbox", "state": "state", "colorpicker": "textbox",
    "code": "textbox",
}


def basedir() -> str:
    """The folder of the extension whose script is being imported, or whose code calls this (A1111 basedir())."""
    from webui.compat.runtime import extension_of_stack, runtime

    rt = runtime()
    if rt.loading is not None:
        return rt.loading.extension.path
    found = extension_of_stack(rt.extensions)
    return found[0].path if found else binding.current().config.install_dir


class Script(_ours.Script):
    """A1111's Script. Subclass it, override ``title``, ``show``, ``ui``, ``run`` or the always-on methods
    (``process``, ``before_process_batch``, ``postprocess_image`` ...), as in A1111."""

    filename = None
    extension = None  # the Extension the class came from (set by the loader)
    group = None
    create_group = True
    section = None
    controls = None  # A1111: the components of the latest ui() call

    def ui(self, is_img2img):
        return None

    def script_arg_list(self, is_img2img):
        """``ui()``'s gradio components as our ScriptArg list (None when ui() returns None), made in a scratch
        Blocks at start. Also notes whether ui() makes its own accordion (``own_accordion``)."""
        import gradio as gr

        with gr.Blocks(analytics_enabled=False) as scratch:
            components = _control_list(self.ui(is_img2img))
        if components is None:
            return None
        self.own_accordion = _makes_accordion(scratch)
        args = [script_arg_from(c) for c in components]
        self.controls = components  # A1111's script.controls: the components of the latest ui() call
        return args

    def page_controls(self, is_img2img, args):
        """A1111 calls ui() inside the page: called again here, in the page's container for this script, so its
        layout and the events it wires are the page's. Its components must be the controls of ``args`` (the
        ScriptArgs read at start): the same number and kinds, else this raises and the page builds the controls
        from ``args``."""
        controls = _control_list(self.ui(is_img2img))
        if controls is None:
            raise ValueError("ui() returned None on the page but components at start")
        kinds = [script_arg_from(c).kind for c in controls]
        expected = [a.kind for a in args]
        if kinds != expected:
            raise ValueError(f"ui() made other controls on the page than at start: {len(kinds)} {kinds} against "
                             f"{len(expected)} {expected} (a ui() whose controls change between calls)")
        self.controls = controls
        return controls

    @property
    def name(self) -> str:
        return self.title().lower()

    def describe(self) -> str:
        return ""

    def elem_id(self, item_id: str) -> str:
        need_tabname = self.show(True) == self.show(False)
        tabkind = "img2img" if self.is_img2img else "txt2img"
        tabname = f"{tabkind}_" if need_tabname else ""
        title = "".join(c if c.isalnum() or c == "_" else "" for c in self.title().lower().replace(" ", "_"))
        return f"script_{tabname}{title}_{item_id}"

    def before_component(self, component, **kwargs):
        pass

    def after_component(self, component, **kwargs):
        pass


def _control_list(components):
    """ui()'s result as a list (A1111 also takes a dict's values), or None."""
    if components is None:
        return None
    if isinstance(components, dict):
        return list(components.values())
    return list(components)


def _makes_accordion(blocks) -> bool:
    """Whether the components ui() made sit in an accordion of its own at its top level (gr.Accordion, or the
    accordion of an InputAccordion), looking through single wrapping groups, rows and columns."""
    import gradio as gr

    children = list(blocks.children)
    while len(children) == 1 and not isinstance(children[0], gr.Accordion) and hasattr(children[0], "children"):
        children = list(children[0].children)
    return any(isinstance(c, gr.Accordion) for c in children)


def script_arg_from(component) -> ScriptArg:
    """One gradio component as a ScriptArg: kind from its class, label, default value, limits and choices."""
    cls = type(component).__name__.lower()
    kind = _KINDS.get(cls)
    if kind is None:
        raise binding.missing("gradio component in Script.ui()", type(component).__name__)
    choices = getattr(component, "choices", None)
    if choices is not None:
        choices = [c[1] if isinstance(c, (tuple, list)) and len(c) == 2 else c for c in choices]
    value = getattr(component, "value", None)
    if kind == "html":
        value = value or ""
    return ScriptArg(
        label=getattr(component, "label", None) or "", value=value, kind=kind,
        minimum=getattr(component, "minimum", None), maximum=getattr(component, "maximum", None),
        step=getattr(component, "step", None), choices=choices, lines=getattr(component, "lines", 1) or 1,
        multiselect=bool(getattr(component, "multiselect", False)), type=getattr(component, "type", "value")
        if kind in ("dropdown", "radio", "checkboxgroup") else "value",
        visible=_visible(component), info=getattr(component, "info", None),
    )


def _visible(component) -> bool:
    """An InputAccordion's checkbox is always hidden: whether it shows is its accordion's visibility."""
    from webui.compat.modules.ui_components import InputAccordion

    shown = component.accordion.visible if isinstance(component, InputAccordion) else getattr(component, "visible",
                                                                                                 True)
    return shown is not False


class _RunnerView:
    """``scripts_txt2img`` / ``scripts_img2img``: the running app's runner with A1111's attribute names."""

    def __init__(self, img2img: bool):
        self._img2img = img2img

    def _runner(self):
        state = binding.current()
        return state.scripts_img2img if self._img2img else state.scripts_txt2img

    @property
    def scripts(self):
        return self._runner().scripts

    @property
    def alwayson_scripts(self):
        return self._runner().alwayson_scripts

    @property
    def selectable_scripts(self):
        return self._runner().selectable_scripts

    @property
    def titles(self):
        return self._runner().titles

    @property
    def inputs(self):
        return self._runner().inputs

    def title_map(self):
        return {s.title().lower(): s for s in self._runner().scripts}

    def __getattr__(self, name):
        raise binding.missing(f"{_MODULE}.scripts_{'img2img' if self._img2img else 'txt2img'}", name)


scripts_txt2img = _RunnerView(False)
scripts_img2img = _RunnerView(True)


def __getattr__(name: str):
    raise binding.missing(_MODULE, name)
