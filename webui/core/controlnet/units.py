"""ControlNet units from ``alwayson_scripts`` and their infotext, as sd-webui-controlnet v1.1.455 reads and writes them.

The extension validates each unit dict with a pydantic model (internal_controlnet/args.py ``ControlNetUnit``,
``from_dict``): legacy aliases (``input_image``, ``lowvram``, ``guidance``, ``mask_image``), range checks (weight
0..2, guidance 0..1, start <= end), a module that must exist, and -- for an enabled unit -- ``processor_res``,
``threshold_a`` and ``threshold_b`` outside the preprocessor's slider range replaced by the slider default (so -1
means "default"). :func:`parse_units` does the same on plain data and returns the frozen
:class:`webui.core.types.ControlNetUnit`; :func:`unit_infotext` writes ``ControlNetUnit.serialize()``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from typing import Any

from webui.core.controlnet.errors import ControlNetError
from webui.core.controlnet.preprocessors import get_preprocessor, module_choices
from webui.core.types import ControlNetUnit

#: enums.ResizeMode values, by their int (ResizeMode.int_value).
RESIZE_MODE_NAMES = ("Just Resize", "Crop and Resize", "Resize and Fill")
#: args.ControlNetUnit.check_resize_mode aliases (old UI names).
RESIZE_MODE_ALIASES = {
    "Inner Fit (Scale to Fit)": "Crop and Resize",
    "Outer Fit (Shrink to Fit)": "Resize and Fill",
    "Scale to Fit (Inner Fit)": "Crop and Resize",
    "Envelope (Outer Fit)": "Resize and Fill",
}
#: enums.ControlMode values, by index (0 Balanced, 1 My prompt is more important, 2 ControlNet is more important).
CONTROL_MODE_NAMES = ("Balanced", "My prompt is more important", "ControlNet is more important")

#: The unit's fields in the order of the extension's positional ControlNetUnit(...) constructor (v1.1.2xx-4xx), for
#: clients that send a unit as a list instead of a dict.
POSITIONAL_FIELDS = (
    "enabled", "module", "model", "weight", "image", "resize_mode", "low_vram", "processor_res", "threshold_a",
    "threshold_b", "guidance_start", "guidance_end", "pixel_perfect", "control_mode",
)

#: ControlNetUnit.infotext_fields(), in order, with their display names (field_to_displaytext).
INFOTEXT_FIELDS = (
    "module", "model", "weight", "resize_mode", "processor_res", "threshold_a", "threshold_b", "guidance_start",
    "guidance_end", "pixel_perfect", "control_mode",
)

#: args.ControlNetUnit.legacy_field_alias
_LEGACY_ALIASES = {"guidance": "guidance_end", "lowvram": "low_vram", "input_image": "image"}

ImageDecoder = Callable[[str, str], bytes]


def decode_base64_bytes(value: str, field: str) -> bytes:
    """A unit image as A1111's decode_base64_to_image reads it (plain base64 or a ``data:image/...;base64,`` URL),
    kept as the encoded file bytes; refused unless PIL can read it."""
    from webui.core.io.images import read_image

    try:
        encoding = value.split(";")[1].split(",")[1] if value.startswith("data:image/") else value
        data = base64.b64decode(encoding)
        read_image(data)
    except Exception as e:
        raise ControlNetError(f"{field}: not a base64-encoded image (PNG, JPEG, WebP, ...), with or without a "
                              "data:image/...;base64, prefix") from e
    return data


def parse_units(alwayson_scripts: Mapping[str, Any] | None, *,
                decode_image: ImageDecoder | None = None) -> tuple[ControlNetUnit, ...]:
    """The ControlNet units of a request's ``alwayson_scripts`` (key "controlnet" in any case, ``{"args": [...]}``).

    Each element of ``args`` is a unit dict, or a unit as a positional list (:data:`POSITIONAL_FIELDS` order); a
    flat list of scalars is read as consecutive positional units; ``None`` and other values are skipped, as the
    extension skips script args that are not units. Disabled units are returned too (``enabled`` False, the
    extension's default for a dict without it); the hook uses only the enabled ones. ``decode_image(value, field)``
    turns an image string into encoded bytes (default: base64 / data URL). Raises :class:`ControlNetError`.
    """
    if not alwayson_scripts:
        return ()
    keys = [k for k in alwayson_scripts if isinstance(k, str) and k.lower() == "controlnet"]
    if not keys:
        return ()
    entry = alwayson_scripts[keys[0]]
    if isinstance(entry, Mapping):
        args = entry.get("args", [])
    elif isinstance(entry, (list, tuple)):
        args = entry
    else:
        raise ControlNetError("alwayson_scripts.controlnet: expected {\"args\": [unit, ...]}")
    if args is None:
        return ()
    if isinstance(args, Mapping) and args and all(str(k).lstrip("-").isdigit() for k in args):
        # the dict form some clients send: {"0": unit, "1": unit} (A1111 script args keyed by position)
        args = [args[k] for k in sorted(args, key=lambda k: int(k))]
    elif isinstance(args, Mapping) and _looks_like_unit(args):
        args = [args]  # a single unit given as the args object
    if not isinstance(args, (list, tuple)):
        raise ControlNetError("alwayson_scripts.controlnet.args: expected a list of ControlNet units")
    decode = decode_image or decode_base64_bytes
    raw_units: list[Mapping[str, Any]] = []
    if args and all(not isinstance(a, (Mapping, list, tuple)) and a is not None for a in args):
        n = len(POSITIONAL_FIELDS)
        if len(args) % n:
            raise ControlNetError(
                f"alwayson_scripts.controlnet.args: a flat positional list must hold {n} values per unit "
                f"({', '.join(POSITIONAL_FIELDS)}); got {len(args)}"
            )
        raw_units = [dict(zip(POSITIONAL_FIELDS, args[i:i + n])) for i in range(0, len(args), n)]
    else:
        for a in args:
            if isinstance(a, Mapping):
                raw_units.append(a)
            elif isinstance(a, (list, tuple)):
                if len(a) > len(POSITIONAL_FIELDS):
                    raise ControlNetError(
                        f"alwayson_scripts.controlnet.args: a positional unit has at most {len(POSITIONAL_FIELDS)} "
                        f"values ({', '.join(POSITIONAL_FIELDS)}); got {len(a)}"
                    )
                raw_units.append(dict(zip(POSITIONAL_FIELDS, a)))
    return tuple(parse_unit(u, index=i, decode_image=decode) for i, u in enumerate(raw_units))


def parse_unit(values: Mapping[str, Any], *, index: int = 0,
               decode_image: ImageDecoder | None = None) -> ControlNetUnit:
    """One unit dict -> ControlNetUnit (args.ControlNetUnit.from_dict and its validators)."""
    where = f"controlnet unit {index}"
    decode = decode_image or decode_base64_bytes
    d = dict(values)
    for alias, key in _LEGACY_ALIASES.items():
        if alias in d:
            if key in d:
                raise ControlNetError(f"{where}: conflict of field '{alias}' and '{key}'")
            d[key] = d.pop(alias)
    if d.get("mask_image") is not None:
        if d.get("mask") is not None:
            raise ControlNetError(f"{where}: cannot specify both 'mask' and 'mask_image'")
        d["mask"] = d["mask_image"]

    enabled = _bool(d.get("enabled", False), f"{where}: enabled")
    module = d.get("module", "none")
    if module is None:
        module = "none"
    if not isinstance(module, str) or get_preprocessor(module) is None:
        raise ControlNetError(f"{where}: module({module}) not found in supported modules. Choose from: "
                              f"{module_choices()}")
    model = d.get("model", "None")
    model = "None" if model is None else model
    if not isinstance(model, str):
        raise ControlNetError(f"{where}: model must be a string, got {model!r}")
    weight = _float(d.get("weight", 1.0), f"{where}: weight")
    if not 0.0 <= weight <= 2.0:
        raise ControlNetError(f"{where}: weight must be between 0 and 2, got {weight}")
    image, mask = _images(d.get("image"), d.get("mask"), where, decode)
    resize_mode = _resize_mode(d.get("resize_mode", 1), f"{where}: resize_mode")
    low_vram = _bool(d.get("low_vram", False), f"{where}: low_vram")
    processor_res: Any = _int(d.get("processor_res", -1), f"{where}: processor_res")
    threshold_a: Any = _float(d.get("threshold_a", -1), f"{where}: threshold_a")
    threshold_b: Any = _float(d.get("threshold_b", -1), f"{where}: threshold_b")
    start = _float(d.get("guidance_start", 0.0), f"{where}: guidance_start")
    end = _float(d.get("guidance_end", 1.0), f"{where}: guidance_end")
    for name, v in (("guidance_start", start), ("guidance_end", end)):
        if not 0.0 <= v <= 1.0:
            raise ControlNetError(f"{where}: {name} must be between 0 and 1, got {v}")
    if start > end:
        raise ControlNetError(f"{where}: guidance_start({start}) > guidance_end({end})")
    pixel_perfect = _bool(d.get("pixel_perfect", False), f"{where}: pixel_perfect")
    control_mode = _control_mode(d.get("control_mode", 0), f"{where}: control_mode")

    if enabled and module:
        # args.ControlNetUnit.bound_check_params: out-of-range -> the slider's default (its own type: 512, 100, 0.5)
        p = get_preprocessor(module)
        checked = []
        for value, slider in ((processor_res, p.slider_resolution), (threshold_a, p.slider_1),
                              (threshold_b, p.slider_2)):
            checked.append(slider.value if value < slider.minimum or value > slider.maximum else value)
        processor_res, threshold_a, threshold_b = checked

    return ControlNetUnit(
        enabled=enabled, module=module, model=model, weight=weight, image=image, mask=mask, resize_mode=resize_mode,
        low_vram=low_vram, processor_res=processor_res, threshold_a=threshold_a, threshold_b=threshold_b,
        guidance_start=start, guidance_end=end, control_mode=control_mode, pixel_perfect=pixel_perfect,
    )


def _images(image: Any, mask: Any, where: str, decode: ImageDecoder) -> tuple[bytes | None, bytes | None]:
    """args.ControlNetUnit.get_input_images_rgba's accepted shapes: a string (with ``mask`` beside it),
    ``{"image", "mask"}``, ``[image, mask]``, or a one-element list of such dicts."""
    if image is None or image == "":
        if mask not in (None, ""):
            raise ControlNetError(f"{where}: a mask was given without an image")
        return None, None
    if isinstance(image, (list, tuple)):
        if not image:
            raise ControlNetError(f"{where}: image: {image!r} is not a valid 'image' field value")
        if isinstance(image[0], Mapping):
            if len(image) != 1:
                raise ControlNetError(f"{where}: image: several input images are accepted only by IP-Adapter "
                                      "units, which are not supported here; send one image")
            image = image[0]
        elif len(image) == 2:
            image, mask = image[0], image[1]
        else:
            raise ControlNetError(f"{where}: image: expected [image, mask], got a list of {len(image)}")
    if isinstance(image, Mapping):
        image, mask = image.get("image"), image.get("mask")
        if image is None:
            raise ControlNetError(f"{where}: image: the {{image, mask}} form needs an 'image'")
    if not isinstance(image, str):
        raise ControlNetError(f"{where}: image: expected a base64 string, got {type(image).__name__}")
    if mask is not None and not isinstance(mask, str):
        raise ControlNetError(f"{where}: mask: expected a base64 string, got {type(mask).__name__}")
    return decode(image, f"{where}: image"), (decode(mask, f"{where}: mask") if mask else None)


_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


def _bool(v: Any, field: str) -> bool:
    """pydantic (v1) bool coercion, as the extension's model applies it."""
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
        return v.strip().lower() in _TRUE
    raise ControlNetError(f"{field}: expected a boolean, got {v!r}")


def _float(v: Any, field: str) -> float:
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    raise ControlNetError(f"{field}: expected a number, got {v!r}")


def _int(v: Any, field: str) -> int:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v)):
        return int(v)
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            pass
    raise ControlNetError(f"{field}: expected an integer, got {v!r}")


def _resize_mode(v: Any, field: str) -> int:
    """check_resize_mode (names and their aliases) and resize_mode_from_value (ints; 3 is A1111's "Just resize
    (latent upscale)", read as Just Resize)."""
    if isinstance(v, str):
        name = RESIZE_MODE_ALIASES.get(v, v)
        if name in RESIZE_MODE_NAMES:
            return RESIZE_MODE_NAMES.index(name)
        choices = ", ".join(RESIZE_MODE_NAMES + tuple(RESIZE_MODE_ALIASES))
        raise ControlNetError(f"{field}: unknown resize mode {v!r}; choose from 0, 1, 2 or {choices}")
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v if v < len(RESIZE_MODE_NAMES) else 0
    raise ControlNetError(f"{field}: expected 0, 1, 2 or a resize mode name, got {v!r}")


def _control_mode(v: Any, field: str) -> int:
    if isinstance(v, str) and v in CONTROL_MODE_NAMES:
        return CONTROL_MODE_NAMES.index(v)
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(CONTROL_MODE_NAMES):
        return v
    raise ControlNetError(f"{field}: expected 0, 1, 2 or one of {', '.join(CONTROL_MODE_NAMES)}; got {v!r}")


# ---------------------------------------------------------------------------------------------------------------
# Infotext (scripts/infotext.py, args.ControlNetUnit.serialize / parse)


def _display(field: str) -> str:
    """field_to_displaytext: "resize_mode" -> "Resize Mode"."""
    return " ".join(word.capitalize() for word in field.split("_"))


def _serialize_value(unit: ControlNetUnit, field: str) -> str:
    value = getattr(unit, field)
    if field == "resize_mode":
        return RESIZE_MODE_NAMES[value]
    if field == "control_mode":
        return CONTROL_MODE_NAMES[value]
    return str(value)


def unit_infotext(unit: ControlNetUnit) -> str:
    """ControlNetUnit.serialize(): ``Module: canny, Model: name [hash], Weight: 1.0, Resize Mode: Crop and Resize,
    Processor Res: 512, Threshold A: 100.0, ...`` -- or "" when a value holds ',' or ':' (the extension logs an
    error and writes an empty value)."""
    items = {_display(f): _serialize_value(unit, f) for f in INFOTEXT_FIELDS}
    if not all("," not in v and ":" not in v for v in items.values()):
        return ""
    return ", ".join(f"{k}: {v}" for k, v in items.items())


def infotext_params(units: tuple[ControlNetUnit, ...] | list[ControlNetUnit]) -> dict[str, str]:
    """Infotext.write_infotext: ``{"ControlNet 0": serialized, ...}`` over the enabled units, numbered among them.
    A1111's infotext writer quotes each value (it holds commas): ``ControlNet 0: "Module: ..."``."""
    enabled = [u for u in units if u.enabled]
    return {f"ControlNet {i}": unit_infotext(u) for i, u in enumerate(enabled)}


def _parse_value(value: str) -> Any:
    """external_code.parse_value: True/False, int, float, else the string."""
    if value in ("True", "False"):
        return value == "True"
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def parse_unit_infotext(text: str) -> dict[str, Any]:
    """ControlNetUnit.parse's reading of one ``ControlNet N`` value: ``{field: value}`` with the extension's value
    parsing (resize and control modes stay their names). Raises :class:`ControlNetError` on a malformed item."""
    out: dict[str, Any] = {}
    for item in text.split(","):
        parts = item.strip().split(": ")
        if len(parts) != 2:
            raise ControlNetError(f"ControlNet infotext item {item.strip()!r} is not 'Key: value'")
        key, value = parts
        out["_".join(word.lower() for word in key.split(" "))] = _parse_value(value)
    return out


def unit_from_infotext(text: str) -> ControlNetUnit:
    """ControlNetUnit.parse: an enabled unit with the fields an infotext carries (for pasting into the UI)."""
    fields = {k: v for k, v in parse_unit_infotext(text).items() if k in INFOTEXT_FIELDS}
    return parse_unit({"enabled": True, **fields})


def _looks_like_unit(value: Mapping) -> bool:
    return any(k in value for k in ("module", "model", "image", "input_image", "enabled"))
