"""The arguments of A1111's create/train functions, under A1111's names, with its UI defaults, and their checks.

``/sdapi/v1/create/*`` and ``/sdapi/v1/train/*`` forward a raw JSON object as keyword arguments (spec section 13); the
Train tab builds the same objects. :func:`from_kwargs` is the one place that turns such a mapping into an args
object: unknown keys, missing required keys and values of the wrong type raise :class:`TrainingInputError` naming
the field (A1111 answers those with a 500 TypeError). ``validate_*`` repeat A1111's ``validate_train_inputs`` checks
and add the ones A1111 leaves to a crash in the middle of the job (a malformed learning-rate schedule, unknown
options, images whose size cannot be encoded), so a bad request is refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webui.core.train.schedule import ScheduleError, parse_schedule

CLIP_GRAD_MODES = ("disabled", "value", "norm")
LATENT_SAMPLING_METHODS = ("once", "deterministic", "random")
HYPERNETWORK_SIZES = (768, 320, 640, 1280, 1024)  # A1111's "Modules" choices (768/1024: the text widths)
WEIGHT_INITS = ("Normal", "KaimingUniform", "KaimingNormal", "XavierUniform", "XavierNormal")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class TrainingInputError(ValueError):
    """A create/train argument that cannot work; ``field`` names it (A1111's argument name). ``status`` is the HTTP
    status an adapter should answer with (404 for an unknown embedding/hypernetwork, else 422)."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


# ---------------------------------------------------------------------------------------------------------------
# the argument sets


@dataclass(frozen=True, kw_only=True)
class CreateEmbeddingArgs:
    """A1111 ``create_embedding(name, num_vectors_per_token, overwrite_old, init_text='*')``."""

    name: str
    num_vectors_per_token: int
    overwrite_old: bool
    init_text: str = "*"

    REQUIRED = ("name", "num_vectors_per_token", "overwrite_old")


@dataclass(frozen=True, kw_only=True)
class CreateHypernetworkArgs:
    """A1111 ``create_hypernetwork(name, enable_sizes, overwrite_old, layer_structure=None, activation_func=None,
    weight_init=None, add_layer_norm=False, use_dropout=False, dropout_structure=None)``. A1111 crashes on its own
    ``None`` defaults for ``layer_structure`` and ``weight_init``; here they mean its UI defaults ("1, 2, 1",
    "Normal")."""

    name: str
    enable_sizes: tuple = ()
    overwrite_old: bool
    layer_structure: Any = None  # "1, 2, 1" or a list of numbers
    activation_func: str | None = None  # None: linear
    weight_init: str | None = None  # None: Normal
    add_layer_norm: bool = False
    use_dropout: bool = False
    dropout_structure: Any = None  # "0, 0, 0" or a list; only read with use_dropout

    REQUIRED = ("name", "enable_sizes", "overwrite_old")


@dataclass(frozen=True, kw_only=True)
class TrainArgs:
    """What A1111's ``train_embedding`` and ``train_hypernetwork`` share, with the Train tab's defaults."""

    id_task: str | None = None
    learn_rate: str = "0.005"
    batch_size: int = 1
    gradient_step: int = 1
    data_root: str = ""
    log_directory: str = "textual_inversion"
    training_width: int = 512
    training_height: int = 512
    varsize: bool = False  # "Do not resize images"
    steps: int = 100000
    clip_grad_mode: str = "disabled"
    clip_grad_value: str = "0.1"
    shuffle_tags: bool = False
    tag_drop_out: float = 0.0
    latent_sampling_method: str = "once"
    use_weight: bool = False  # "Use PNG alpha channel as loss weight"
    create_image_every: int = 500
    template_filename: str = "style_filewords.txt"
    preview_from_txt2img: bool = False
    preview_prompt: str = ""
    preview_negative_prompt: str = ""
    preview_steps: int = 20
    preview_sampler_name: str = "DPM++ 2M"
    preview_cfg_scale: float = 7.0
    preview_seed: int = -1
    preview_width: int = 512
    preview_height: int = 512

    # A1111's required keyword arguments (spec section 13); everything else is optional here
    REQUIRED_COMMON = ("learn_rate", "batch_size", "gradient_step", "data_root", "log_directory", "training_width",
                       "training_height", "varsize", "steps", "clip_grad_mode", "clip_grad_value", "shuffle_tags",
                       "tag_drop_out", "latent_sampling_method", "use_weight", "create_image_every",
                       "template_filename", "preview_from_txt2img", "preview_prompt", "preview_negative_prompt",
                       "preview_steps", "preview_sampler_name", "preview_cfg_scale", "preview_seed", "preview_width",
                       "preview_height")


@dataclass(frozen=True, kw_only=True)
class TrainEmbeddingArgs(TrainArgs):
    embedding_name: str = ""
    save_embedding_every: int = 500
    save_image_with_stored_embedding: bool = True

    REQUIRED = ("embedding_name", *TrainArgs.REQUIRED_COMMON, "save_embedding_every",
                "save_image_with_stored_embedding")
    NAME_FIELD = "embedding_name"
    SAVE_FIELD = "save_embedding_every"

    @property
    def name(self) -> str:
        return self.embedding_name

    @property
    def save_every(self) -> int:
        return self.save_embedding_every


@dataclass(frozen=True, kw_only=True)
class TrainHypernetworkArgs(TrainArgs):
    hypernetwork_name: str = ""
    learn_rate: str = "0.00001"
    save_hypernetwork_every: int = 500

    REQUIRED = ("hypernetwork_name", *TrainArgs.REQUIRED_COMMON, "save_hypernetwork_every")
    NAME_FIELD = "hypernetwork_name"
    SAVE_FIELD = "save_hypernetwork_every"

    @property
    def name(self) -> str:
        return self.hypernetwork_name

    @property
    def save_every(self) -> int:
        return self.save_hypernetwork_every


# ---------------------------------------------------------------------------------------------------------------
# kwargs -> args (types as pydantic v1 would coerce them)


def _as_int(name: str, v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            pass
    raise TrainingInputError(name, f"expected an integer, got {v!r}")


def _as_float(name: str, v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if math.isfinite(float(v)):
            return float(v)
    elif isinstance(v, str):
        try:
            f = float(v.strip())
            if math.isfinite(f):
                return f
        except ValueError:
            pass
    raise TrainingInputError(name, f"expected a finite number, got {v!r}")


_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f"}


def _as_bool(name: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
        return v.strip().lower() in _TRUE
    raise TrainingInputError(name, f"expected true or false, got {v!r}")


def _as_str(name: str, v: Any, *, numbers: bool = False) -> str:
    if isinstance(v, str):
        return v
    if numbers and isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise TrainingInputError(name, f"expected a string, got {v!r}")


def _convert(cls, name: str, v: Any) -> Any:
    annotation = {f.name: f.type for f in dataclasses.fields(cls)}[name]
    if v is None and "None" in str(annotation):
        return None
    if name in ("learn_rate", "clip_grad_value"):  # schedules: A1111 takes "0.005:100, 1e-5" or a bare number
        return _as_str(name, v, numbers=True)
    if name in ("layer_structure", "dropout_structure"):
        if isinstance(v, (list, tuple)):
            return tuple(_as_float(name, x) for x in v)
        return _as_str(name, v)
    if name == "enable_sizes":
        if not isinstance(v, (list, tuple)):
            raise TrainingInputError(name, f"expected a list of sizes such as [768, 320, 640, 1280], got {v!r}")
        return tuple(_as_int(name, x) for x in v)
    if annotation in ("int",):
        return _as_int(name, v)
    if annotation in ("float",):
        return _as_float(name, v)
    if annotation in ("bool",):
        return _as_bool(name, v)
    return _as_str(name, v)


def from_kwargs(cls, data: Mapping[str, Any], *, require: bool = True):
    """Build ``cls`` from A1111's keyword arguments. ``require``: A1111's required arguments must be present (the
    API); the Train tab fills every field itself."""
    if not isinstance(data, Mapping):
        raise TrainingInputError("body", "expected a JSON object of keyword arguments")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise TrainingInputError(unknown[0], f"unexpected argument; valid arguments: {', '.join(names)}")
    if require:
        missing = [k for k in cls.REQUIRED if k not in data]
        if missing:
            raise TrainingInputError(missing[0], "missing required argument" + (
                f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""))
    return cls(**{k: _convert(cls, k, v) for k, v in data.items()})


# ---------------------------------------------------------------------------------------------------------------
# checks


def sanitize_name(name: str) -> str:
    """A1111: "Remove illegal characters from name" -- letters, digits and ``._- `` stay."""
    return "".join(x for x in name if x.isalnum() or x in "._- ")


def parse_layer_structure(value: Any, field_name: str = "layer_structure") -> list[float]:
    """``"1, 2, 1"`` (or a list) -> [1.0, 2.0, 1.0]; must start and end with 1 (A1111's asserts)."""
    if value is None:
        return [1.0, 2.0, 1.0]
    if isinstance(value, str):
        try:
            parts = [float(x.strip()) for x in value.split(",")]
        except ValueError:
            raise TrainingInputError(field_name, f"{value!r} is not a comma-separated list of numbers") from None
    else:
        parts = [float(x) for x in value]
    if field_name == "layer_structure":
        if len(parts) < 2 or parts[0] != 1 or parts[-1] != 1 or any(p <= 0 for p in parts):
            raise TrainingInputError(field_name, "must start and end with 1 with positive sizes between, "
                                                 "e.g. '1, 2, 1'")
    return parts


def validate_create_embedding(args: CreateEmbeddingArgs) -> str:
    """The file name the embedding gets (A1111 sanitizes the name)."""
    name = sanitize_name(args.name)
    if not name:
        raise TrainingInputError("name", "the name is empty (after removing characters other than letters, digits "
                                         "and '._- ')")
    if not 1 <= args.num_vectors_per_token <= 75:
        raise TrainingInputError("num_vectors_per_token", "must be 1 to 75 (one prompt chunk)")
    return name


def validate_create_hypernetwork(args: CreateHypernetworkArgs) -> tuple[str, list[float], list[float] | None]:
    name = sanitize_name(args.name)
    if not name:
        raise TrainingInputError("name", "Name cannot be empty!")
    if not args.enable_sizes:
        raise TrainingInputError("enable_sizes", f"choose at least one module size ({', '.join(map(str, HYPERNETWORK_SIZES))})")
    if any(s <= 0 for s in args.enable_sizes):
        raise TrainingInputError("enable_sizes", "sizes must be positive")
    layers = parse_layer_structure(args.layer_structure)
    from webui.core.networks.hypernetworks import activation_class

    if args.activation_func not in (None, "linear"):
        try:
            activation_class(args.activation_func)
        except ValueError as e:
            raise TrainingInputError("activation_func", str(e)) from None
    if args.weight_init not in (None, *WEIGHT_INITS):
        raise TrainingInputError("weight_init", f"unknown initialization; choose one of {', '.join(WEIGHT_INITS)}")
    dropout = None
    if args.use_dropout and args.dropout_structure:
        dropout = parse_layer_structure(args.dropout_structure, "dropout_structure")
        if len(dropout) != len(layers):
            raise TrainingInputError("dropout_structure", f"needs {len(layers)} numbers, one per layer structure entry")
        if dropout[0] != 0 or dropout[-1] != 0 or any(not 0 <= d < 1 for d in dropout):
            raise TrainingInputError("dropout_structure", "must start and end with 0, each value in [0, 1)")
    return name, layers, dropout


def _schedule(field_name: str, text: str, steps: int) -> None:
    try:
        parse_schedule(text, steps)
    except ScheduleError as e:
        raise TrainingInputError(field_name, f"malformed schedule {text!r} ({e}); expected e.g. "
                                             "'0.005:100, 1e-3:1000, 1e-5'") from None


def dataset_images(data_root: str) -> list[str]:
    """The files of the dataset folder that open as images, sorted (A1111 reads os.listdir and skips the rest)."""
    from PIL import Image

    out = []
    for fn in sorted(os.listdir(data_root)):
        path = os.path.join(data_root, fn)
        if not os.path.isfile(path) or fn.lower().endswith(".txt"):
            continue
        try:
            with Image.open(path) as im:
                im.size  # noqa: B018 - the header is enough to know it is an image
        except Exception:
            continue
        out.append(path)
    return out


def validate_train(args: TrainArgs, templates: Mapping[str, str], vae_scale: int = 8) -> list[str]:
    """A1111 ``validate_train_inputs`` plus what it would crash on later. Returns the dataset's image files."""
    name_field = type(args).NAME_FIELD
    save_field = type(args).SAVE_FIELD
    if not args.name:
        raise TrainingInputError(name_field, f"{'embedding' if name_field == 'embedding_name' else 'hypernetwork'} "
                                             "not selected")
    if args.steps <= 0:
        raise TrainingInputError("steps", "Max steps must be positive")
    if not str(args.learn_rate).strip():
        raise TrainingInputError("learn_rate", "Learning rate is empty or 0")
    _schedule("learn_rate", args.learn_rate, args.steps)
    if args.batch_size <= 0:
        raise TrainingInputError("batch_size", "Batch size must be positive")
    if args.gradient_step <= 0:
        raise TrainingInputError("gradient_step", "Gradient accumulation step must be positive")
    if args.clip_grad_mode not in CLIP_GRAD_MODES:
        raise TrainingInputError("clip_grad_mode", f"choose one of {', '.join(CLIP_GRAD_MODES)}")
    if args.clip_grad_mode != "disabled":
        _schedule("clip_grad_value", args.clip_grad_value, args.steps)
    if args.latent_sampling_method not in LATENT_SAMPLING_METHODS:
        raise TrainingInputError("latent_sampling_method", f"choose one of {', '.join(LATENT_SAMPLING_METHODS)}")
    if not 0 <= args.tag_drop_out <= 1:
        raise TrainingInputError("tag_drop_out", "must be between 0 and 1")
    if args.save_every < 0:
        raise TrainingInputError(save_field, "must be positive or 0")
    if args.create_image_every < 0:
        raise TrainingInputError("create_image_every", "must be positive or 0")
    if (args.save_every or args.create_image_every) and not args.log_directory:
        raise TrainingInputError("log_directory", "Log directory is empty")
    if not args.template_filename:
        raise TrainingInputError("template_filename", "Prompt template file not selected")
    if args.template_filename not in templates:
        raise TrainingInputError("template_filename", f"Prompt template file {args.template_filename} not found; "
                                                      f"available: {', '.join(sorted(templates)) or '(none)'}")
    for f in ("training_width", "training_height"):
        v = getattr(args, f)
        if v < vae_scale or v % vae_scale:
            raise TrainingInputError(f, f"must be a positive multiple of {vae_scale} (the VAE's scale)")
    if args.create_image_every and args.preview_from_txt2img:
        for f in ("preview_width", "preview_height"):
            v = getattr(args, f)
            if v < vae_scale or v % vae_scale:
                raise TrainingInputError(f, f"must be a positive multiple of {vae_scale}")
        if args.preview_steps <= 0:
            raise TrainingInputError("preview_steps", "must be positive")
        from webui.core.generation.samplers import find_sampler, sampler_names

        if not args.preview_sampler_name or find_sampler(args.preview_sampler_name) is None:
            raise TrainingInputError("preview_sampler_name", f"unknown sampler {args.preview_sampler_name!r}; "
                                                             f"choose one of {', '.join(sampler_names())}")
    if not args.data_root:
        raise TrainingInputError("data_root", "Dataset directory is empty")
    if not os.path.isdir(args.data_root):
        raise TrainingInputError("data_root", f"Dataset directory doesn't exist: {args.data_root}")
    if not os.listdir(args.data_root):
        raise TrainingInputError("data_root", f"Dataset directory is empty: {args.data_root}")
    files = dataset_images(args.data_root)
    if not files:
        raise TrainingInputError("data_root", f"No images have been found in the dataset: {args.data_root}")
    if args.varsize:  # not resized: every image must encode to whole latent pixels
        from PIL import Image

        for path in files:
            with Image.open(path) as im:
                w, h = im.size
            if w % vae_scale or h % vae_scale:
                raise TrainingInputError("varsize", f"{os.path.basename(path)} is {w}x{h}: with 'do not resize' every "
                                                    f"side must be a multiple of {vae_scale}")
    return files


__all__ = [
    "CreateEmbeddingArgs",
    "CreateHypernetworkArgs",
    "TrainArgs",
    "TrainEmbeddingArgs",
    "TrainHypernetworkArgs",
    "TrainingInputError",
    "dataset_images",
    "from_kwargs",
    "parse_layer_structure",
    "sanitize_name",
    "validate_create_embedding",
    "validate_create_hypernetwork",
    "validate_train",
]
