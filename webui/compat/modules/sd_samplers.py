"""A1111 ``modules.sd_samplers``: the sampler names of the running server (our sampler table)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplerData:
    """A1111's ``SamplerData`` fields that extensions read (name, aliases, options)."""

    name: str
    constructor: object = None
    aliases: list = field(default_factory=list)
    options: dict = field(default_factory=dict)


def _table() -> list[SamplerData]:
    from webui.core.generation.samplers import samplers_api_list

    return [SamplerData(name=s["name"], aliases=s["aliases"], options=s["options"]) for s in samplers_api_list()]


def __getattr__(name: str):
    if name in ("all_samplers", "samplers", "samplers_for_img2img"):
        return _table()
    if name == "all_samplers_map":
        return {s.name: s for s in _table()}
    from webui.compat import binding

    raise binding.missing("modules.sd_samplers", name)


def visible_sampler_names() -> list[str]:
    """The names the Sampler dropdown shows (A1111: all but those in option hide_samplers)."""
    from webui.compat import binding

    hidden = set(binding.current().settings.get("hide_samplers") or [])
    return [s.name for s in _table() if s.name not in hidden]
