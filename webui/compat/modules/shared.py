"""A1111 ``modules.shared``: ``opts``, ``cmd_opts``, ``state``, ``sd_model`` and the option declarations
(``OptionInfo``, ``OptionHTML``, ``options_section``) as views of the bound AppState (see ``webui.compat.binding``).

``opts.X`` reads and ``opts.X = v`` writes the app's options store (checked like POST /options; saved by
``opts.save()``); ``opts.add_option(key, OptionInfo(...))`` registers an extension's option in this app's schema,
so it is listed by GET /sdapi/v1/options, settable by POST, shown in the Settings tab under its section and saved in
config.json. ``cmd_opts`` are the launch flags, those extensions add in ``preload.py`` included. ``state`` is the
queue's progress (interrupted, skipped, job, job_no, job_count, sampling_step, sampling_steps, interrupt(), skip()).
"""

from __future__ import annotations

from typing import Any

from webui.compat import binding

_MODULE = "modules.shared"

# gradio component class names -> the control kind of our options schema
_COMPONENT_KINDS = {
    "checkbox": "checkbox", "slider": "slider", "number": "number", "radio": "radio", "dropdown": "dropdown",
    "checkboxgroup": "checkboxgroup", "textbox": "textbox", "html": "html", "colorpicker": "textbox",
    "code": "textbox",
}


class OptionInfo:
    """A1111's option declaration: default, label, control (a gradio class) and its args, section; the chained
    ``.info()``, ``.html()``, ``.needs_reload_ui()``, ``.needs_restart()``, ``.link()`` return it."""

    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before="", comment_after="", infotext=None, restrict_api=False,
                 category_id=None):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.refresh = refresh
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api
        self.category_id = category_id
        self.do_not_save = False
        self.reload_ui = False
        self.restart = False

    def info(self, info: str) -> "OptionInfo":
        self.comment_after += f"<span class='info'>({info})</span>"
        self._info = info
        return self

    def html(self, html: str) -> "OptionInfo":
        self.comment_after += html
        return self

    def link(self, label: str, url: str) -> "OptionInfo":
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label: str, js_func: str) -> "OptionInfo":
        return self

    def needs_reload_ui(self) -> "OptionInfo":
        self.reload_ui = True
        return self

    def needs_restart(self) -> "OptionInfo":
        self.restart = True
        return self

    def to_option(self, key: str, section: tuple | None, extension: str | None):
        """This declaration as an entry of our options schema."""
        from webui.core.settings import Option

        section = section or self.section or ("extensions", "Uncategorized")
        section_id, section_title = (section[0], section[1]) if isinstance(section, (tuple, list)) else (section,
                                                                                                          section)
        args = self.component_args() if callable(self.component_args) else dict(self.component_args or {})
        kind = None
        if self.component is not None:
            kind = _COMPONENT_KINDS.get(getattr(self.component, "__name__", "").lower(), "textbox")
        elif isinstance(self.default, bool):
            kind = "checkbox"
        choices = args.get("choices")
        if choices is not None:
            choices = tuple(c[1] if isinstance(c, (tuple, list)) and len(c) == 2 else c for c in choices)
        return Option(
            key=key, default=self.default, label=self.label, section=section_id or "extensions", choices=choices,
            minimum=args.get("minimum"), maximum=args.get("maximum"), step=args.get("step"),
            api_restricted=bool(self.restrict_api), display_only=isinstance(self, OptionHTML),
            info=getattr(self, "_info", None), needs_reload_ui=self.reload_ui or self.restart,
            section_title=section_title, kind=kind, extension=extension,
        )


class OptionHTML(OptionInfo):
    """A1111's explanation entry: HTML text shown on the settings page, not a value one sets."""

    def __init__(self, text: str):
        super().__init__(str(text).strip(), label="", component=None)


def options_section(section_identifier, options_dict: dict) -> dict:
    """A1111 ``options_section``: set the section of every OptionInfo in ``options_dict``."""
    for value in options_dict.values():
        value.section = section_identifier
    return options_dict


class _Options:
    """``shared.opts``: the bound app's options store."""

    def _settings(self):
        return binding.current().settings

    def _effective(self):
        """The running job's options on its thread (override_settings applied), else the stored ones."""
        state = binding.current()
        job = state.compat.job_settings() if state.compat is not None else None
        return job if job is not None else state.settings

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        settings = self._effective()
        if settings.has(key):
            return settings.get(key)
        raise AttributeError(f"{_MODULE}.opts has no option {key!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __contains__(self, key: str) -> bool:
        return self._settings().has(key)

    @property
    def data(self) -> dict:
        """A snapshot of every option's value (A1111's ``opts.data``; change values through ``opts.X = v``)."""
        return self._effective().all()

    @property
    def data_labels(self) -> dict:
        return {o.key: _info_from(o) for o in self._settings().options()}

    def get_default(self, key: str):
        return self._settings().option(key).default

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        """Store ``value`` checked as POST /options checks it (type, choices, --freeze-settings); unsaved until
        ``save()``, as in A1111. Returns whether it changed."""
        from webui.core.options import changed_options

        state = binding.current()
        settings = state.settings
        if not settings.has(key):
            raise AttributeError(f"{_MODULE}.opts has no option {key!r}")
        changes = changed_options({key: value}, settings=settings, flags=state.config, registry=state.registry,
                                  vae_registry=state.vae_registry, for_request=False)
        for k, v in changes.items():
            settings.set(k, v)
        return bool(changes)

    def save(self, filename: str | None = None) -> None:
        self._settings().save()

    def add_option(self, key: str, info: OptionInfo) -> None:
        """Register an extension's option in this app's schema (A1111 ``opts.add_option``)."""
        from webui.compat import runtime

        extension = runtime.calling_extension()
        binding.current().settings.add_option(info.to_option(key, info.section, extension.name if extension else None))

    def onchange(self, key: str, func, call: bool = True) -> None:
        """Call ``func()`` after the stored ``key`` changes (POST /options, the Settings tab, ``opts.X = v``), and
        now when ``call``, as A1111."""
        self._settings().on_change(key, func)
        if call:
            func()

    def __repr__(self) -> str:
        return "<modules.shared.opts: the running app's options>"


def _info_from(opt) -> OptionInfo:
    info = OptionInfo(opt.default, opt.label, section=(opt.section, opt.section_title or opt.section))
    info.restrict_api = opt.api_restricted
    return info


class _CmdOpts:
    """``shared.cmd_opts``: the launch flags under their argparse names, those added by preload.py included."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        config = binding.current().config
        flags = config.cmd_flags()
        if name in flags:
            return flags[name]
        derived = {"webui_is_non_local": config.is_non_local,
                   "disable_extension_access": config.extension_access_disabled}
        if name in derived:
            return derived[name]
        raise AttributeError(f"{_MODULE}.cmd_opts has no flag {name!r}")

    def __repr__(self) -> str:
        return "<modules.shared.cmd_opts: the running app's launch flags>"


class _State:
    """``shared.state``: the queue's progress of the running job (A1111 ``State``)."""

    def _tracker(self):
        return binding.current().queue.progress

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        tracker = self._tracker()
        if name in ("begin", "end") or not hasattr(tracker, name):
            raise binding.missing(f"{_MODULE}.state", name)
        return getattr(tracker, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._tracker(), name, value)

    def nextjob(self) -> None:
        """A1111 State.nextjob: the next job of the job count."""
        tracker = self._tracker()
        tracker.job_no = tracker.job_no + 1
        tracker.sampling_step = 0

    def dict(self) -> dict:
        return self._tracker().state_dict()

    def __repr__(self) -> str:
        return "<modules.shared.state: the running job's progress>"


class SdModel:
    """``shared.sd_model``: the loaded checkpoint with A1111's attributes (``sd_checkpoint_info``, ``is_sdxl`` ...);
    other attributes are the loaded diffusers components (unet, vae, text_encoder ...)."""

    def __init__(self, components):
        self._components = components

    @property
    def sd_checkpoint_info(self):
        return CheckpointInfoView(self._components.info)

    @property
    def sd_model_checkpoint(self) -> str:
        return self._components.info.filename

    @property
    def sd_model_hash(self) -> str | None:
        return self._components.info.shorthash

    @property
    def is_sdxl(self) -> bool:
        return self._components.is_sdxl

    @property
    def is_sd2(self) -> bool:
        return self._components.arch.startswith("SD2")

    @property
    def is_sd1(self) -> bool:
        return self._components.arch.startswith("SD1")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(self._components, name)
        except AttributeError:
            raise binding.missing(f"{_MODULE}.sd_model", name) from None


class CheckpointInfoView:
    """A1111 ``CheckpointInfo``: filename, title, name, name_for_extra, model_name, hash, sha256, shorthash."""

    def __init__(self, info):
        self._info = info
        self.filename = info.filename
        self.title = info.title
        self.name = info.name
        self.model_name = info.model_name
        self.name_for_extra = info.model_name.replace("\\", "/").rsplit("/", 1)[-1]
        self.sha256 = info.sha256
        self.shorthash = info.shorthash
        self.hash = info.shorthash

    def __repr__(self) -> str:
        return f"<CheckpointInfo {self.title}>"


opts = _Options()
cmd_opts = _CmdOpts()
state = _State()


class _Interrogator:
    """``shared.interrogator`` (A1111 InterrogateModels): the BLIP + CLIP interrogator of the bound app.
    ``interrogate(pil)`` is the caption with the ranked phrases (what ``/sdapi/v1/interrogate`` model "clip" answers),
    ``generate_caption(pil)`` BLIP's caption alone. A missing model file raises InterrogatorUnavailable naming it."""

    def interrogate(self, pil_image) -> str:
        return binding.current().interrogators.interrogate(pil_image.convert("RGB"), "clip")

    def generate_caption(self, pil_image) -> str:
        return binding.current().interrogators.clip().generate_caption(pil_image.convert("RGB"))

    def categories(self):
        return binding.current().interrogators.clip().categories()

    def load(self) -> None:
        binding.current().interrogators.clip().load()

    def unload(self) -> None:
        binding.current().interrogators.clip().offload()


interrogator = _Interrogator()


def __getattr__(name: str):
    if name == "sd_model":
        model = binding.current().engine.current_model()
        return SdModel(model) if model is not None else None
    if name == "device":
        return binding.current().plan.device
    if name == "prompt_styles":
        return binding.current().styles
    raise binding.missing(_MODULE, name)
