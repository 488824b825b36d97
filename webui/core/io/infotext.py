"""Build and parse A1111's infotext, the ``parameters`` text stored in generated images.

Pure functions on strings and dicts; no torch, no settings object. Where A1111 reads an option
(``infotext_skip_pasting``, ``infotext_styles``, ``auto_backcompat``, ``use_old_hires_fix_width_height``) the function
takes it as a keyword argument with A1111's default, so callers pass the effective settings.

Reproduces ``modules/processing.py:create_infotext`` and ``modules/infotext_utils.py`` (``quote``, ``unquote``,
``re_param``, ``parse_generation_parameters``) and ``modules/infotext_versions.py:backcompat`` of A1111 v1.10.1, and
the ``infotext_pasted`` callbacks of its built-in Lora extension (AddNet fields, ``Lora hashes``) that png-info and
paste run on the parsed dict.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

log = logging.getLogger(__name__)

# A1111 infotext_utils.re_param: `Key: value` pairs, a value either JSON-quoted or running up to the next comma.
re_param = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
re_imagesize = re.compile(r"^(\d+)x(\d+)$")

# processing.py:create_infotext, the order of the fixed keys (spec §6.7). extra_generation_params, then Version and
# User follow them.
INFOTEXT_ORDER: tuple[str, ...] = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "FP8 weight",
    "Cache FP16 weight for LoRA",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "Token merging ratio hr",
    "Init image hash",
    "RNG",
    "Tiling",
)

# ---------------------------------------------------------------------------------------------------------------------
# quoting


def quote(value: Any) -> Any:
    """A1111 infotext_utils.quote: JSON-quote a value whose text contains ',', ':' or a newline; else return it."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return value
    return json.dumps(value, ensure_ascii=False)


def unquote(text: str) -> Any:
    """A1111 infotext_utils.unquote: undo ``quote`` for a text in double quotes; anything else comes back unchanged."""
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


# ---------------------------------------------------------------------------------------------------------------------
# building


def ordered_params(
    core: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    version: str | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    """The generation-params dict in A1111's order (processing.py:create_infotext's dict literal).

    ``core`` keys must be among ``INFOTEXT_ORDER`` (any order in; laid out in that order). Then ``extra`` (the
    request's extra_generation_params) in insertion order, a key already present keeping its place and taking the new
    value; then ``Version`` and ``User``. None values stay in the dict; ``build_infotext`` leaves them out.
    """
    unknown = [k for k in core if k not in INFOTEXT_ORDER]
    if unknown:
        raise ValueError(
            f"Unknown core infotext keys {unknown}; core keys are: {', '.join(INFOTEXT_ORDER)} "
            "(anything else goes in extra)"
        )
    res: dict[str, Any] = {k: core[k] for k in INFOTEXT_ORDER if k in core}
    res.update(extra or {})
    res["Version"] = version
    res["User"] = user
    return res


def build_infotext(prompt: str, negative_prompt: str | None, params: Mapping[str, Any]) -> str:
    """A1111 create_infotext's text: prompt, optional ``Negative prompt:`` line, then the ``Key: value`` line.

    Pairs with a None value are left out; a pair whose value equals its key is written as the bare key; values are
    formatted with ``str`` (7.0 -> "7.0") and JSON-quoted when they contain ',', ':' or a newline.
    """
    params_text = ", ".join(
        k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None
    )
    negative_text = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative_text}\n{params_text}".strip()


# ---------------------------------------------------------------------------------------------------------------------
# parsing


def parse_generation_parameters(
    text: str,
    skip_fields: Iterable[str] = (),
    *,
    infotext_styles: str = "Apply if any",
    extract_styles: Callable[[str, str], tuple[list[str], str, str]] | None = None,
    auto_backcompat: bool = True,
    use_old_hires_fix_width_height: bool = False,
) -> dict[str, Any]:
    """A1111 v1.10.1 infotext_utils.parse_generation_parameters.

    Values are strings as written (quoted ones unquoted), ``WxH`` values split into ``Key-1``/``Key-2`` strings, and
    A1111's defaults inserted for missing keys (some of them ints or bools, as A1111 has them).

    ``skip_fields`` is option ``infotext_skip_pasting``; ``infotext_styles`` the option of that name; ``extract_styles``
    is the style database's ``extract_styles_from_prompt(prompt, negative) -> (styles, prompt, negative)``, None when
    there are no styles; ``auto_backcompat`` and ``use_old_hires_fix_width_height`` are the options of those names.
    """
    res: dict[str, Any] = {}
    prompt = ""
    negative_prompt = ""
    done_with_prompt = False

    *lines, lastline = text.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""

    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    for k, v in re_param.findall(lastline):
        try:
            if v[0] == '"' and v[-1] == '"':
                v = unquote(v)
            m = re_imagesize.match(v)
            if m is not None:
                res[f"{k}-1"] = m.group(1)
                res[f"{k}-2"] = m.group(2)
            else:
                res[k] = v
        except Exception:
            # A1111 prints and skips the pair (e.g. an empty value: v[0] raises).
            log.warning('Error parsing "%s: %s"', k, v)

    if infotext_styles != "Ignore" and extract_styles is not None:
        found_styles, prompt_no_styles, negative_no_styles = extract_styles(prompt, negative_prompt)

        same_hr_styles = True
        if "Hires prompt" in res or "Hires negative prompt" in res:
            ver = parse_version(res.get("Version"))
            if ver is None or ver > _v(_V180_HR_STYLES):
                hr_prompt = res.get("Hires prompt", prompt)
                hr_negative = res.get("Hires negative prompt", negative_prompt)
                hr_found, hr_prompt_no_styles, hr_negative_no_styles = extract_styles(hr_prompt, hr_negative)
                same_hr_styles = found_styles == hr_found
                if same_hr_styles:
                    res["Hires prompt"] = "" if hr_prompt_no_styles == prompt_no_styles else hr_prompt_no_styles
                    res["Hires negative prompt"] = (
                        "" if hr_negative_no_styles == negative_no_styles else hr_negative_no_styles
                    )

        if same_hr_styles:
            prompt, negative_prompt = prompt_no_styles, negative_no_styles
            if (infotext_styles == "Apply if any" and found_styles) or infotext_styles == "Apply":
                res["Styles array"] = found_styles

    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt

    # Missing CLIP skip means it was set to 1 (the default)
    if "Clip skip" not in res:
        res["Clip skip"] = "1"

    hypernet = res.get("Hypernet", None)
    if hypernet is not None:
        res["Prompt"] += f"""<hypernet:{hypernet}:{res.get("Hypernet strength", "1.0")}>"""

    if "Hires resize-1" not in res:
        res["Hires resize-1"] = 0
        res["Hires resize-2"] = 0

    defaults: list[tuple[str, Any]] = [
        ("Hires sampler", "Use same sampler"),
        ("Hires schedule type", "Use same scheduler"),
        ("Hires checkpoint", "Use same checkpoint"),
        ("Hires prompt", ""),
        ("Hires negative prompt", ""),
        ("Mask mode", "Inpaint masked"),
        ("Masked content", "original"),
        ("Inpaint area", "Whole picture"),
        ("Masked area padding", 32),
    ]
    for key, value in defaults:
        res.setdefault(key, value)

    _restore_old_hires_fix_params(res, use_old_hires_fix_width_height)

    defaults = [
        ("RNG", "GPU"),  # missing RNG means the default, GPU
        ("Schedule type", "Automatic"),
        ("Schedule max sigma", 0),
        ("Schedule min sigma", 0),
        ("Schedule rho", 0),
        ("VAE Encoder", "Full"),
        ("VAE Decoder", "Full"),
        ("FP8 weight", "Disable"),
    ]
    for key, value in defaults:
        res.setdefault(key, value)

    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False

    attention = _parse_prompt_attention(prompt) + _parse_prompt_attention(negative_prompt)
    uses_emphasis = len(attention) != len([p for p in attention if p[1] == 1.0 or p[0] == "BREAK"])
    if "Emphasis" not in res and uses_emphasis:
        res["Emphasis"] = "Original"

    if "Refiner switch by sampling steps" not in res:
        res["Refiner switch by sampling steps"] = False

    if auto_backcompat:
        _backcompat(res)

    for key in skip_fields:
        res.pop(key, None)

    return res


def split_sampler_schedule(
    sampler: str, schedule_type: str | None, schedulers: Sequence[Sequence[str]]
) -> tuple[str, str]:
    """Legacy sampler names with a schedule suffix ("DPM++ 2M Karras") -> (sampler name, schedule label).

    A1111 sd_samplers.get_sampler_and_scheduler, the part that needs no sampler table: ``schedulers`` lists each
    schedule type as (label, name, *aliases), Automatic first. The given ``schedule_type`` (label or name) is used,
    unknown or missing meaning the first entry; a sampler name ending in " <label|name|alias>" loses the suffix and
    that schedule wins. Looking the remaining sampler name up (and A1111's "revert to Automatic when it is the
    sampler's own default") is the sampler table's job. A1111 applies this when infotext is pasted (the
    ``Sampler``/``Schedule type`` paste fields), not in ``parse_generation_parameters``, whose ``Sampler`` stays as
    written.
    """
    by_key: dict[str, str] = {}
    for entry in schedulers:
        by_key.setdefault(entry[1], entry[0])
        by_key.setdefault(entry[0], entry[0])
    found = by_key.get(schedule_type, schedulers[0][0]) if schedule_type is not None else schedulers[0][0]

    name = sampler
    for entry in schedulers:
        for option in entry:
            if name.endswith(" " + option):
                found = entry[0]
                name = name[: -(len(option) + 1)]
                break
    return name, found


# ---------------------------------------------------------------------------------------------------------------------
# infotext_pasted callbacks of A1111's built-in Lora extension (run after parsing by png-info and by paste)

re_lora_tag = re.compile("<lora:([^:]+):")  # extensions-builtin/Lora/scripts/lora_script.py re_lora
re_addnet_name = re.compile(r"(.*)\s*\([0-9a-fA-F]+\)")  # extensions-builtin/Lora/networks.py re_network_name


def addnet_pasted(params: dict[str, Any]) -> dict[str, Any]:
    """A1111 Lora ``networks.infotext_pasted``: fields of the old additional-networks extension (``AddNet Module N:
    LoRA``, ``AddNet Model N: name(hash)``, ``AddNet Weight A N``) become ``<lora:name:weight>`` tags appended to the
    prompt on a new line. Mutates and returns ``params``."""
    added = []
    for k in params:
        if not k.startswith("AddNet Model "):
            continue
        num = k[13:]
        if params.get("AddNet Module " + num) != "LoRA":
            continue
        name = params.get("AddNet Model " + num)
        if name is None:
            continue
        m = re_addnet_name.match(name)
        if m:
            name = m.group(1)
        multiplier = params.get("AddNet Weight A " + num, "1.0")
        added.append(f"<lora:{name}:{multiplier}>")
    if added:
        params["Prompt"] += "\n" + "".join(added)
    return params


def lora_hashes_pasted(params: dict[str, Any], alias_for_hash: Callable[[str], str | None]) -> dict[str, Any]:
    """A1111 Lora ``lora_script.infotext_pasted``: with ``Lora hashes: "name: hash, ..."``, each ``<lora:name:``
    in the prompt whose hash belongs to a LoRA on disk is rewritten to that LoRA's current alias, so an image made
    with a renamed file still finds it. ``alias_for_hash(shorthash)`` is A1111's ``available_network_hash_lookup``
    followed by ``get_alias()`` (None when no listed network has that hash). A malformed list leaves the params as
    they are (A1111 reports the callback's exception and goes on). Mutates and returns ``params``."""
    hashes_text = params.get("Lora hashes")
    if not hashes_text:
        return params
    try:
        pairs = [x.strip().split(":", 1) for x in hashes_text.split(",")]
        hashes = {x[0].strip().replace(",", ""): x[1].strip() for x in pairs}
    except (IndexError, AttributeError):
        log.warning("Cannot read Lora hashes %r", hashes_text)
        return params

    def network_replacement(m: re.Match) -> str:
        shorthash = hashes.get(m.group(1))
        if shorthash is None:
            return m.group(0)
        alias = alias_for_hash(shorthash)
        if alias is None:
            return m.group(0)
        return f"<lora:{alias}:"

    params["Prompt"] = re.sub(re_lora_tag, network_replacement, params["Prompt"])
    return params


def infotext_pasted(
    params: dict[str, Any], lora_alias_for_hash: Callable[[str], str | None] | None = None
) -> dict[str, Any]:
    """A1111 ``script_callbacks.infotext_pasted_callback`` with the built-in extensions' callbacks in A1111's order
    (AddNet fields, then Lora hashes), as ``/sdapi/v1/png-info`` runs it after ``parse_generation_parameters``."""
    addnet_pasted(params)
    if lora_alias_for_hash is not None:
        lora_hashes_pasted(params, lora_alias_for_hash)
    return params


# ---------------------------------------------------------------------------------------------------------------------
# A1111 helpers parse_generation_parameters depends on


def _old_hires_fix_first_pass_dimensions(width: int, height: int) -> tuple[int, int]:
    """A1111 processing.old_hires_fix_first_pass_dimensions."""
    scale = math.sqrt((512 * 512) / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def _restore_old_hires_fix_params(res: dict[str, Any], use_old_hires_fix_width_height: bool) -> None:
    """A1111 infotext_utils.restore_old_hires_fix_params: old ``First pass size`` -> Size + Hires resize."""
    firstpass_width = res.get("First pass size-1", None)
    firstpass_height = res.get("First pass size-2", None)

    if use_old_hires_fix_width_height:
        hires_width = int(res.get("Hires resize-1", 0))
        hires_height = int(res.get("Hires resize-2", 0))
        if hires_width and hires_height:
            res["Size-1"] = hires_width
            res["Size-2"] = hires_height
            return

    if firstpass_width is None or firstpass_height is None:
        return

    firstpass_width, firstpass_height = int(firstpass_width), int(firstpass_height)
    width = int(res.get("Size-1", 512))
    height = int(res.get("Size-2", 512))
    if firstpass_width == 0 or firstpass_height == 0:
        firstpass_width, firstpass_height = _old_hires_fix_first_pass_dimensions(width, height)

    res["Size-1"] = firstpass_width
    res["Size-2"] = firstpass_height
    res["Hires resize-1"] = width
    res["Hires resize-2"] = height


def parse_version(text: str | None):
    """A1111 infotext_versions.parse_version: "v1.7.0-225-gabc" -> Version("v1.7.0-225"); None when unparsable."""
    from packaging import version

    if text is None:
        return None
    m = re.match(r"([^-]+-[^-]+)-.*", text)
    if m:
        text = m.group(1)
    try:
        return version.parse(text)
    except Exception:
        return None


def _v(text: str):
    from packaging import version  # imported on use: no import-time work

    return version.parse(text)


_V160 = "1.6.0"
_V170_TSNR = "v1.7.0-225"
_V180 = "1.8.0"
_V180_HR_STYLES = "1.8.0-139"


def _backcompat(d: dict[str, Any]) -> None:
    """A1111 infotext_versions.backcompat: flags for infotexts written by older versions (option auto_backcompat)."""
    ver = parse_version(d.get("Version"))
    if ver is None:
        return
    if ver < _v(_V160) and "[" in d.get("Prompt", ""):
        d["Old prompt editing timelines"] = True
    if ver < _v(_V160) and d.get("Sampler", "") in ("DDIM", "PLMS"):
        d["Pad conds v0"] = True
    if ver < _v(_V170_TSNR):
        d["Downcast alphas_cumprod"] = True
    if ver < _v(_V180) and d.get("Refiner"):
        d["Refiner switch by sampling steps"] = True


def _parse_prompt_attention(text: str) -> list[list[Any]]:
    """A1111 prompt_parser.parse_prompt_attention, used here only for the "Emphasis" default (does the prompt use
    any weight other than 1.0?)."""
    from webui.core.generation.prompts import parse_prompt_attention

    return parse_prompt_attention(text)
