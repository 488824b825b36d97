"""Checkpoint Merger: A1111 v1.10.1 ``modules/extras.py:run_modelmerger``, streamed tensor by tensor.

What it reproduces, as A1111 does it:

- methods "No interpolation" (A, for format conversion and VAE baking), "Weighted sum" ``A*(1-M) + B*M`` and
  "Add difference" ``A + (B-C)*M``, with A1111's exact expressions (so results are bit-identical);
- only keys containing ``model`` that exist in A and B are merged (an SDXL checkpoint's CLIP-L,
  ``conditioner.embedders.0.transformer.*``, has no ``model`` in its name and stays A's, as in A1111); keys only in B
  or C are dropped; in "Add difference" a key of B missing from C contributes nothing (B-C is zeros); the text
  encoder's ``position_ids`` is never merged;
- an inpainting (9 input channels) or instruct-pix2pix (8) model as A merged with a normal model as B: the first 4
  input channels are merged, the rest stay A's, and the file name gets ``.inpainting`` / ``.instruct-pix2pix``;
  the other way round is refused with A1111's message;
- "Save as float16" converts float32 tensors only (A1111 ``to_half``) and, as in A1111, only merged keys, baked VAE
  keys and, with "No interpolation", all keys;
- "Bake in VAE": the VAE file's weights replace ``first_stage_model.*``; "Discard weights with matching name": keys
  matching the regex (``re.search``) are left out;
- file name ``0.7(a) + 0.3(b)`` / ``a + 0.3(b - c)`` / ``a`` or the custom name, in ``--ckpt-dir`` or
  models/Stable-diffusion; ``.yaml`` config copied from A, B or C ("A, B or C", "B", "C", "Don't");
- metadata: ``format: pt``, the inputs' metadata (copy_metadata_fields), the user's JSON, ``sd_merge_recipe`` and
  ``sd_merge_models`` exactly as A1111 serialises them (json.dumps, same keys, same order).

What differs, on purpose:

- Memory: A1111 loads A, B and C whole (3x the model size, plus the result). Here every input is read one tensor at
  a time straight from the file (safetensors header offsets + ``readinto``; no memory map, whose touched pages would
  count as resident), and the safetensors output is streamed: the header is planned first from the inputs' headers
  (torch's own dtype promotion, run on one-element tensors), then each tensor is computed, written and freed. Where
  shapes and dtypes agree the arithmetic runs in place, same operations in the same order, so the bits are A1111's.
  Peak memory is a few tensors.
  A ``.ckpt`` output is a pickle and needs the whole result in memory, as in A1111.
- The file is written through ``atomic_write`` (temporary name, ``os.replace``), so a crash never leaves half a
  checkpoint in the list; the checkpoint registry is refreshed and the new file hashed, so it is listed at once.
- Model hashes are computed before the recipe is written (A1111 reads ``sha256`` before computing it and writes
  ``null`` for a checkpoint never hashed before).
- A VAE file whose keys carry ``first_stage_model.`` or use diffusers names is baked too (A1111 silently bakes
  nothing for those); an unknown VAE name, an invalid regex or invalid metadata JSON is an error listing what is
  valid (A1111 ignores the first, crashes on the second, prints and continues on the third).
- Metadata values that are not strings (JSON objects parsed from the inputs' headers, numbers in the user's JSON)
  are written back as JSON text, where A1111's ``save_file`` raises.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from webui.core.io.files import atomic_write
from webui.core.models.registry import CheckpointNotFound, CheckpointRegistry, VaeRegistry, model_hash
from webui.core.types import CheckpointInfo

logger = logging.getLogger(__name__)

NO_INTERPOLATION = "No interpolation"
WEIGHTED_SUM = "Weighted sum"
ADD_DIFFERENCE = "Add difference"
INTERP_METHODS = (NO_INTERPOLATION, WEIGHTED_SUM, ADD_DIFFERENCE)  # A1111's radio, in its order
CHECKPOINT_FORMATS = ("ckpt", "safetensors")
CONFIG_SOURCES = ("A, B or C", "B", "C", "Don't")  # A1111's radio (type="index": the request holds the index)
VAE_NONE = "None"

# A1111 extras.checkpoint_dict_skip_on_merge
CHECKPOINT_DICT_SKIP_ON_MERGE = frozenset({"cond_stage_model.transformer.text_model.embeddings.position_ids"})

# A1111 sd_models.checkpoint_dict_replacements_sd1 / _sd2_turbo, applied by its read_state_dict to every file it
# merges (old SD1 files without "text_model."; SD2-Turbo in SGM layout).
_REPLACEMENTS_SD1 = {
    "cond_stage_model.transformer.embeddings.": "cond_stage_model.transformer.text_model.embeddings.",
    "cond_stage_model.transformer.encoder.": "cond_stage_model.transformer.text_model.encoder.",
    "cond_stage_model.transformer.final_layer_norm.": "cond_stage_model.transformer.text_model.final_layer_norm.",
}
_REPLACEMENTS_SD2_TURBO = {"conditioner.embedders.0.": "cond_stage_model."}
_SD2_TURBO_PROBE = "conditioner.embedders.0.model.ln_final.weight"

_VAE_PREFIX = "first_stage_model."
_VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")

# safetensors dtype names <-> torch dtypes
_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


class MergeError(ValueError):
    """A merge that cannot be done; the message is what the Checkpoint Merger tab shows (A1111's text where it has
    one, e.g. "Failed: Merging requires a secondary model.")."""


@dataclass(frozen=True, kw_only=True)
class MergeRequest:
    """The Checkpoint Merger tab's inputs under A1111's names, with A1111's UI defaults.

    Model names are anything the checkpoint registry resolves (title ``name [hash]``, file name, stem, hash).
    ``config_source`` is the index into ``CONFIG_SOURCES``; ``bake_in_vae`` a name from the VAE list or "None".
    """

    primary_model_name: str
    secondary_model_name: str | None = None
    tertiary_model_name: str | None = None
    interp_method: str = WEIGHTED_SUM
    multiplier: float = 0.3
    save_as_half: bool = False
    custom_name: str = ""
    checkpoint_format: str = "safetensors"
    config_source: int = 0
    bake_in_vae: str = VAE_NONE
    discard_weights: str = ""
    save_metadata: bool = True
    add_merge_recipe: bool = True
    copy_metadata_fields: bool = True
    metadata_json: str = "{}"


@dataclass(frozen=True)
class MergeResult:
    """What a merge wrote: the file, its registry entry (hashed unless --no-hashing), the message A1111 shows
    ("Checkpoint saved to <path>"), the flags, the metadata written (empty for .ckpt) and the copied config."""

    filename: str
    checkpoint: CheckpointInfo | None
    message: str
    is_inpainting: bool = False
    is_instruct_pix2pix: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)
    config_filename: str | None = None
    tensors: int = 0


# ---------------------------------------------------------------------------------------------------------------
# Reading inputs one tensor at a time


def _a1111_keys(keys: Iterable[str], shape_of: Callable[[str], tuple[int, ...]]) -> dict[str, str]:
    """A1111 ``get_state_dict_from_checkpoint`` key renaming: new key -> key in the file."""
    keys = list(keys)
    is_sd2_turbo = _SD2_TURBO_PROBE in keys and tuple(shape_of(_SD2_TURBO_PROBE))[:1] == (1024,)
    replacements = _REPLACEMENTS_SD2_TURBO if is_sd2_turbo else _REPLACEMENTS_SD1
    out: dict[str, str] = {}
    for k in keys:
        new = k
        for text, replacement in replacements.items():
            if new.startswith(text):
                new = replacement + new[len(text) :]
        out[new] = k
    return out


def read_safetensors_header(path: str) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor entries and ``__metadata__``). Raises MergeError if the file
    is not safetensors."""
    with open(path, "rb") as f:
        raw = f.read(8)
        n = int.from_bytes(raw, "little") if len(raw) == 8 else 0
        head = f.read(n) if 2 < n < 100 * 1024 * 1024 else b""
    if not head.startswith((b'{"', b"{'")):
        raise MergeError(f"{path} is not a safetensors file")
    try:
        return json.loads(head)
    except ValueError as e:
        raise MergeError(f"{path}: unreadable safetensors header ({e})") from e


def read_checkpoint_metadata(path: str) -> dict[str, Any]:
    """A1111 ``sd_models.read_metadata_from_safetensors`` (CheckpointInfo.metadata): the header's ``__metadata__``
    with string values that look like JSON objects parsed; {} for anything but a .safetensors file."""
    if os.path.splitext(path)[1].lower() != ".safetensors":
        return {}
    res: dict[str, Any] = {}
    for k, v in (read_safetensors_header(path).get("__metadata__") or {}).items():
        res[k] = v
        if isinstance(v, str) and v[0:1] == "{":
            try:
                res[k] = json.loads(v)
            except ValueError:
                pass
    return res


@dataclass(frozen=True)
class _Spec:
    """A tensor's dtype and shape, without data."""

    dtype: torch.dtype
    shape: torch.Size

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.shape.numel() * self.dtype.itemsize


class _TensorSource(abc.ABC):
    """One input file: key names (A1111-renamed), shapes and dtypes without reading data, tensors on demand."""

    keys: dict[str, str]  # A1111 key -> key in the file
    owned: bool = False  # get() returns fresh memory nobody else holds, so the merge may work in place

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def __bool__(self) -> bool:
        return bool(self.keys)

    @abc.abstractmethod
    def spec(self, key: str) -> _Spec:
        """The key's dtype and shape (no data read)."""

    @abc.abstractmethod
    def get(self, key: str) -> torch.Tensor:
        """The key's tensor, read now."""

    def close(self) -> None:
        pass


class _SafetensorsSource(_TensorSource):
    """Reads each tensor with one ``readinto`` at its header offsets into freshly allocated memory. Unlike
    ``safe_open`` (a memory map), nothing of the file stays resident after a tensor is dropped."""

    owned = True

    def __init__(self, path: str):
        self.path = path
        header = read_safetensors_header(path)
        with open(path, "rb") as f:
            self._data_start = 8 + int.from_bytes(f.read(8), "little")
        self._entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            dtype = _ST_DTYPES.get(entry["dtype"])
            if dtype is None:
                raise MergeError(f"{path}: tensor {name} has unsupported dtype {entry['dtype']}")
            begin, end = entry["data_offsets"]
            self._entries[name] = (dtype, tuple(entry["shape"]), begin, end)
        self.keys = _a1111_keys(self._entries, lambda k: self._entries[k][1])
        # open for the source's lifetime (one handle for all reads), closed by close()
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115

    def spec(self, key: str) -> _Spec:
        dtype, shape, _, _ = self._entries[self.keys[key]]
        return _Spec(dtype, torch.Size(shape))

    def get(self, key: str) -> torch.Tensor:
        dtype, shape, begin, end = self._entries[self.keys[key]]
        flat = torch.empty(int(torch.Size(shape).numel()), dtype=dtype)
        nbytes = end - begin
        if nbytes != flat.numel() * flat.element_size():
            raise MergeError(f"{self.path}: tensor {key} has {nbytes} bytes for shape {list(shape)} {dtype}")
        if nbytes:
            view = memoryview(flat.view(torch.uint8).numpy()).cast("B")
            self._file.seek(self._data_start + begin)
            got = 0
            while got < nbytes:
                n = self._file.readinto(view[got:])
                if not n:
                    raise MergeError(f"{self.path}: file ends inside tensor {key}")
                got += n
        return flat.reshape(shape)

    def close(self) -> None:
        self._file.close()


class _DictSource(_TensorSource):
    """Tensors already in memory: a pickled .ckpt (``torch.load`` with ``mmap=True``, so pages are read on use)
    or a converted diffusers-layout VAE."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], rename: bool = True):
        self._tensors = dict(tensors)
        self.keys = (
            _a1111_keys(self._tensors, lambda k: tuple(self._tensors[k].shape))
            if rename
            else {k: k for k in self._tensors}
        )

    def spec(self, key: str) -> _Spec:
        t = self._tensors[self.keys[key]]
        return _Spec(t.dtype, t.shape)

    def get(self, key: str) -> torch.Tensor:
        return self._tensors[self.keys[key]]


def _open_checkpoint(path: str) -> _TensorSource:
    if os.path.splitext(path)[1].lower() == ".safetensors":
        return _SafetensorsSource(path)
    from webui.core.models.loader import CheckpointLoadError, read_state_dict

    try:
        return _DictSource(read_state_dict(path))
    except CheckpointLoadError as e:
        raise MergeError(str(e)) from e


class _VaeSource(_TensorSource):
    """A VAE file as A1111's ``load_vae_dict`` gives it (``loss*`` and ``model_ema.*`` dropped), keyed by the
    checkpoint key it replaces (``first_stage_model.<key>``). Bare LDM keys are A1111's layout; keys already
    prefixed with ``first_stage_model.`` and diffusers-format files are accepted too (see webui.core.networks.vae)."""

    def __init__(self, path: str):
        src = _open_checkpoint(path)
        names = list(src.keys)
        prefixed = [k for k in names if k.startswith(_VAE_PREFIX)]
        bare = {k[len(_VAE_PREFIX) :]: k for k in prefixed} if prefixed else {k: k for k in names}
        vae = {k: v for k, v in bare.items() if k.startswith(_VAE_PARTS)}
        if not vae:
            src.close()
            raise MergeError(f"{path}: no VAE weights in this file (encoder.*/decoder.* keys); is it a VAE?")
        if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in vae):
            # diffusers layout: convert in memory (a VAE is small next to a checkpoint)
            from webui.core.networks.vae import _ldm_vae_keys

            tensors = {k: src.get(k) for k in names}
            src.close()
            self._src: _TensorSource = _DictSource(_ldm_vae_keys(tensors, path), rename=False)
            self.keys = {k: k for k in self._src.keys}
        else:
            self._src = src
            self.keys = {_VAE_PREFIX + k: orig for k, orig in vae.items()}

    def spec(self, key: str) -> _Spec:
        return self._src.spec(self.keys[key])

    def get(self, key: str) -> torch.Tensor:
        return self._src.get(self.keys[key])

    def close(self) -> None:
        self._src.close()


# ---------------------------------------------------------------------------------------------------------------
# The arithmetic (A1111's expressions, so results are bit-identical)


def weighted_sum(theta0: torch.Tensor, theta1: torch.Tensor, alpha: float) -> torch.Tensor:
    """A1111 ``weighted_sum``: ``(1 - alpha) * theta0 + alpha * theta1``."""
    return ((1 - alpha) * theta0) + (alpha * theta1)


def get_difference(theta1: torch.Tensor, theta2: torch.Tensor) -> torch.Tensor:
    """A1111 ``get_difference``: B - C."""
    return theta1 - theta2


def add_difference(theta0: torch.Tensor, theta1_2_diff: torch.Tensor, alpha: float) -> torch.Tensor:
    """A1111 ``add_difference``: ``A + alpha * (B - C)``."""
    return theta0 + (alpha * theta1_2_diff)


def to_half(tensor: torch.Tensor, enable: bool) -> torch.Tensor:
    """A1111 ``to_half``: float32 -> float16 when enabled; every other dtype (bf16, fp16, ints) unchanged."""
    if enable and tensor.dtype == torch.float:
        return tensor.half()
    return tensor


def _result_dtype(fn: Callable[..., torch.Tensor], *dtypes: torch.dtype) -> torch.dtype:
    """The dtype ``fn`` gives for inputs of these dtypes: torch's own promotion, run on one-element tensors."""
    return fn(*(torch.zeros(1, dtype=d) for d in dtypes)).dtype


def _broadcast(a: torch.Size, b: torch.Size) -> torch.Size:
    """Broadcasting of two shapes, as the elementwise arithmetic applies it (torch.broadcast_shapes, without the
    torch._refs import it triggers); RuntimeError when they do not broadcast, as the arithmetic raises."""
    n = max(len(a), len(b))
    out = []
    for x, y in zip((1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise RuntimeError(f"shapes {tuple(a)} and {tuple(b)} do not broadcast")
    return torch.Size(out)


def _half_dtype(dtype: torch.dtype, enable: bool) -> torch.dtype:
    return torch.float16 if enable and dtype == torch.float else dtype


class _Merger:
    """One output tensor from A, B, C and the VAE. ``plan`` predicts its dtype and shape (and the inpainting /
    instruct-pix2pix flag) from the files' headers, so the output header can be written before any data;
    ``compute`` does the arithmetic. Both follow the same branches, and the writer checks they agree."""

    def __init__(
        self,
        req: MergeRequest,
        a: _TensorSource,
        b: _TensorSource | None,
        c: _TensorSource | None,
        vae: _TensorSource | None,
    ):
        self.req, self.a, self.b, self.c, self.vae = req, a, b, c, vae
        self.func2 = {WEIGHTED_SUM: weighted_sum, ADD_DIFFERENCE: add_difference}.get(req.interp_method)
        self.discard = re.compile(req.discard_weights) if req.discard_weights else None
        # tensors read fresh for each key, held by nobody else: the arithmetic may reuse their memory
        self.owned = a.owned and (b is None or b.owned) and (c is None or c.owned)

    def output_keys(self) -> list[str]:
        """A's keys (A1111's theta_0) minus the discarded ones, in A's order."""
        return [k for k in self.a.keys if not (self.discard is not None and re.search(self.discard, k))]

    def _branch(self, key: str) -> str:
        if self.vae is not None and key in self.vae:
            # A1111 merges the key, then overwrites it with the VAE's tensor: only the VAE's survives.
            return "vae"
        if (
            self.func2 is not None
            and self.b
            and "model" in key
            and key in self.b
            and key not in CHECKPOINT_DICT_SKIP_ON_MERGE
        ):
            return "merge"
        return "a"

    def _c_has(self, key: str) -> bool:
        return self.req.interp_method == ADD_DIFFERENCE and self.c is not None and key in self.c

    def plan(self, key: str) -> tuple[_Spec, str | None]:
        """(dtype and shape of the output tensor, "inpainting" | "instruct-pix2pix" | None); raises MergeError where
        ``compute`` would fail."""
        half = self.req.save_as_half
        flag = None
        branch = self._branch(key)
        if branch == "vae":
            spec = self.vae.spec(key)
            spec = _Spec(_half_dtype(spec.dtype, half), spec.shape)
        elif branch == "merge":
            a, b = self.a.spec(key), self.b.spec(key)
            m = self.req.multiplier
            if self.req.interp_method == ADD_DIFFERENCE and self._c_has(key):
                c = self.c.spec(key)
                try:
                    b = _Spec(_result_dtype(get_difference, b.dtype, c.dtype), _broadcast(b.shape, c.shape))
                except RuntimeError as e:
                    raise _cannot_subtract(key, b.shape, c.shape, e) from e
            flag = _channel_flag(key, a.shape, b.shape)
            if flag is not None:
                dtype, shape = a.dtype, a.shape  # assigned into a copy of A
            else:
                try:
                    shape = _broadcast(a.shape, b.shape)
                    dtype = _result_dtype(lambda x, y: self.func2(x, y, m), a.dtype, b.dtype)
                except RuntimeError as e:
                    raise _cannot_merge(key, a.shape, b.shape, e) from e
            spec = _Spec(_half_dtype(dtype, half), shape)
        else:
            spec = self.a.spec(key)
        if half and self.func2 is None:
            spec = _Spec(_half_dtype(spec.dtype, half), spec.shape)
        return spec, flag

    def compute(self, key: str) -> torch.Tensor:
        """The output tensor for ``key``, read and computed now."""
        half = self.req.save_as_half
        branch = self._branch(key)
        if branch == "vae":
            value = to_half(self.vae.get(key), half)
        elif branch == "merge":
            c = self.c.get(key) if self._c_has(key) else None
            value = to_half(self._merge(key, self.a.get(key), self.b.get(key), c), half)
        else:
            value = self.a.get(key)
        if half and self.func2 is None:
            value = to_half(value, half)
        return value

    def _merge(self, key: str, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """A1111's per-key arithmetic. With tensors we own, it reuses A's and B's memory where shapes and dtypes
        agree: the same operations in the same order, so the same bits as A1111's out-of-place expressions, with
        two or three tensors alive instead of five."""
        m = self.req.multiplier

        def same(x: torch.Tensor, y: torch.Tensor) -> bool:
            return self.owned and x.shape == y.shape and x.dtype == y.dtype and x.is_floating_point()

        if self.req.interp_method == ADD_DIFFERENCE:
            # A1111's first pass over B: B - C, or zeros where C lacks the key
            if c is None:
                b = torch.zeros_like(b)
            elif same(b, c):
                b = b.sub_(c)
            else:
                try:
                    b = get_difference(b, c)
                except RuntimeError as e:
                    raise _cannot_subtract(key, b.shape, c.shape, e) from e
        if same(a, b):
            if self.req.interp_method == WEIGHTED_SUM:
                return a.mul_(1 - m).add_(b.mul_(m))  # ((1 - m) * A) + (m * B)
            return a.add_(b.mul_(m))  # A + (m * (B - C))
        if _channel_flag(key, a.shape, b.shape) is not None:
            # an inpainting / instruct-pix2pix A with a normal B: merge the first 4 input channels, keep A's others
            out = a.clone()
            out[:, 0:4, :, :] = self.func2(a[:, 0:4, :, :], b, m)
            return out
        try:
            return self.func2(a, b, m)
        except RuntimeError as e:
            raise _cannot_merge(key, a.shape, b.shape, e) from e


def _channel_flag(key: str, a: torch.Size, b: torch.Size) -> str | None:
    """A1111's input-channel rule: shapes that differ only in dim 1 are an inpainting (9 channels) or
    instruct-pix2pix (8) model A with a normal (4) model B; the other way round, or other counts, are refused."""
    if a == b or a[0:1] + a[2:] != b[0:1] + b[2:]:
        return None
    if a[1] == 4 and b[1] == 9:
        raise MergeError("When merging inpainting model with a normal one, A must be the inpainting model.")
    if a[1] == 4 and b[1] == 8:
        raise MergeError("When merging instruct-pix2pix model with a normal one, A must be the instruct-pix2pix model.")
    if a[1] == 8 and b[1] == 4:
        return "instruct-pix2pix"
    if a[1] == 9 and b[1] == 4:
        return "inpainting"
    raise MergeError(f"Bad dimensions for merged layer {key}: A={a}, B={b}")


def _cannot_subtract(key: str, b, c, e: Exception) -> MergeError:
    return MergeError(f"Cannot subtract C from B for {key}: B={tuple(b)}, C={tuple(c)} ({e})")


def _cannot_merge(key: str, a, b, e: Exception) -> MergeError:
    return MergeError(f"Cannot merge {key}: A={tuple(a)}, B={tuple(b)} ({e})")


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _metadata_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.view(torch.uint8).numpy()).cast("B")


def _safetensors_header(planned: Mapping[str, _Spec], metadata: Mapping[str, str] | None) -> tuple[bytes, list[str]]:
    """A safetensors header for ``planned`` (dtypes and shapes): tensors laid out largest element size first, then by
    name (the order safetensors' own writer uses, which keeps every tensor aligned), padded to 8 bytes."""
    order = sorted(planned, key=lambda k: (-planned[k].itemsize, k))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for k in order:
        t = planned[k]
        if t.dtype not in _ST_NAMES:
            raise MergeError(f"cannot store {k} of dtype {t.dtype} in safetensors")
        n = t.nbytes
        header[k] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return raw, order


# ---------------------------------------------------------------------------------------------------------------
# The merge


def _output_name(
    req: MergeRequest,
    a: CheckpointInfo,
    b: CheckpointInfo | None,
    c: CheckpointInfo | None,
    inpainting: bool,
    ip2p: bool,
) -> str:
    """A1111's file name: ``filename_weighted_sum`` / ``filename_add_difference`` / ``filename_nothing`` or the
    custom name, then ``.inpainting`` / ``.instruct-pix2pix``, then the format's extension."""
    if req.custom_name != "":
        name = req.custom_name
    elif req.interp_method == WEIGHTED_SUM:
        name = f"{round(1 - req.multiplier, 2)}({a.model_name}) + {round(req.multiplier, 2)}({b.model_name})"
    elif req.interp_method == ADD_DIFFERENCE:
        name = f"{a.model_name} + {round(req.multiplier, 2)}({b.model_name} - {c.model_name})"
    else:
        name = a.model_name
    name += ".inpainting" if inpainting else ""
    name += ".instruct-pix2pix" if ip2p else ""
    return name + "." + req.checkpoint_format


def _merge_recipe_metadata(
    req: MergeRequest, infos: list[CheckpointInfo | None], metadatas: list[dict], inpainting: bool, ip2p: bool
) -> dict[str, str]:
    """A1111's ``sd_merge_recipe`` and ``sd_merge_models`` (json.dumps of its dicts, in its key order)."""
    a, b, c = infos
    merge_recipe = {
        "type": "webui",  # A1111: "indicate this model was merged with webui's built-in merger"
        "primary_model_hash": a.sha256,
        "secondary_model_hash": b.sha256 if b else None,
        "tertiary_model_hash": c.sha256 if c else None,
        "interp_method": req.interp_method,
        "multiplier": req.multiplier,
        "save_as_half": req.save_as_half,
        "custom_name": req.custom_name,
        "config_source": req.config_source,
        "bake_in_vae": req.bake_in_vae,
        "discard_weights": req.discard_weights,
        "is_inpainting": inpainting,
        "is_instruct_pix2pix": ip2p,
    }
    sd_merge_models: dict[Any, Any] = {}
    for info, meta in zip(infos, metadatas):
        if info is None:
            continue
        sd_merge_models[info.sha256] = {
            "name": info.name,
            "legacy_hash": model_hash(info.filename),
            "sd_merge_recipe": meta.get("sd_merge_recipe", None),
        }
        models = meta.get("sd_merge_models", {})
        if isinstance(models, dict):
            sd_merge_models.update(models)
    return {"sd_merge_recipe": json.dumps(merge_recipe), "sd_merge_models": json.dumps(sd_merge_models)}


def _copy_config(output: str, config_source: int, infos: list[CheckpointInfo | None]) -> str | None:
    """A1111 ``create_config``: the ``.yaml`` beside A (else B, else C), or B's, or C's, copied beside the result."""

    def config(info: CheckpointInfo | None) -> str | None:
        if info is None:
            return None
        path = os.path.splitext(info.filename)[0] + ".yaml"
        return path if os.path.exists(path) else None

    a, b, c = infos
    if config_source == 0:
        cfg = config(a) or config(b) or config(c)
    elif config_source == 1:
        cfg = config(b)
    elif config_source == 2:
        cfg = config(c)
    else:
        cfg = None
    if cfg is None:
        return None
    target = os.path.splitext(output)[0] + ".yaml"
    logger.info("Copying config from %s to %s", cfg, target)

    def write(f):
        with open(cfg, "rb") as src:
            shutil.copyfileobj(src, f)

    atomic_write(target, write)
    return target


def _resolve(registry: CheckpointRegistry, name: str) -> CheckpointInfo:
    try:
        return registry.get_or_raise(name)
    except CheckpointNotFound as e:
        raise MergeError(str(e)) from e


def _validate(req: MergeRequest) -> None:
    if req.interp_method not in INTERP_METHODS:
        raise MergeError(
            f"Unknown interpolation method {req.interp_method!r}; choose one of: {', '.join(INTERP_METHODS)}"
        )
    if req.checkpoint_format not in CHECKPOINT_FORMATS:
        raise MergeError(f"Unknown checkpoint format {req.checkpoint_format!r}; choose one of: ckpt, safetensors")
    if not 0 <= int(req.config_source) < len(CONFIG_SOURCES):
        raise MergeError(
            f"config_source must be an index into {list(CONFIG_SOURCES)} (0-{len(CONFIG_SOURCES) - 1}), "
            f"got {req.config_source!r}"
        )
    if req.discard_weights:
        try:
            re.compile(req.discard_weights)
        except re.error as e:
            raise MergeError(f"Discard weights: invalid regular expression {req.discard_weights!r} ({e})") from e
    name = req.custom_name
    if name and (os.path.isabs(name) or ".." in name.replace("\\", "/").split("/")):
        raise MergeError(f"Custom name {name!r} must be a file name inside the checkpoint folder")


def merge_checkpoints(
    request: MergeRequest,
    registry: CheckpointRegistry,
    vae_registry: VaeRegistry | None = None,
    *,
    output_dir: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> MergeResult:
    """A1111 ``run_modelmerger``: merge, save, copy the config, refresh the checkpoint list. See the module doc.

    ``output_dir`` defaults to A1111's: the first ``--ckpt-dir`` folder, else models/Stable-diffusion.
    ``progress(textinfo, step, total)`` is called as A1111 updates ``shared.state`` (textinfo "Merging A and B",
    "Saving", ...). Raises MergeError with a message for the user; nothing is written on error.
    """
    req = request
    _validate(req)
    report = progress or (lambda text, step, total: None)

    merging = req.interp_method != NO_INTERPOLATION
    needs_c = req.interp_method == ADD_DIFFERENCE
    if not req.primary_model_name:
        raise MergeError("Failed: Merging requires a primary model.")
    a_info = _resolve(registry, req.primary_model_name)
    if merging and not req.secondary_model_name:
        raise MergeError("Failed: Merging requires a secondary model.")
    b_info = _resolve(registry, req.secondary_model_name) if merging else None
    if needs_c and not req.tertiary_model_name:
        raise MergeError(f"Failed: Interpolation method ({req.interp_method}) requires a tertiary model.")
    c_info = _resolve(registry, req.tertiary_model_name) if needs_c else None

    vae_path = None
    if req.bake_in_vae and req.bake_in_vae != VAE_NONE:
        found = vae_registry.resolve(req.bake_in_vae) if vae_registry is not None else None
        if found is None:
            names = [VAE_NONE, *(vae_registry.names() if vae_registry is not None else [])]
            raise MergeError(f"Bake in VAE: unknown VAE {req.bake_in_vae!r}; choose one of: {', '.join(names)}")
        vae_path = found.filename

    user_metadata: dict[str, Any] = {}
    if req.save_metadata:
        try:
            user_metadata = json.loads(req.metadata_json or "{}")
        except ValueError as e:
            raise MergeError(f"Metadata in JSON format is not valid JSON: {e}") from e
        if not isinstance(user_metadata, dict):
            raise MergeError("Metadata in JSON format must be a JSON object ({...})")

    sources: list[_TensorSource] = []
    try:
        a = _open_checkpoint(a_info.filename)
        sources.append(a)
        b = _open_checkpoint(b_info.filename) if b_info else None
        if b is not None:
            sources.append(b)
        c = _open_checkpoint(c_info.filename) if c_info else None
        if c is not None:
            sources.append(c)
        vae = _VaeSource(vae_path) if vae_path else None
        if vae is not None:
            sources.append(vae)
        merger = _Merger(req, a, b, c, vae)

        # 1. plan from the headers: output dtypes and shapes, inpainting flags; errors surface before any writing
        keys = merger.output_keys()
        planned: dict[str, _Spec] = {}
        flags: set[str] = set()
        for key in keys:
            spec, flag = merger.plan(key)
            planned[key] = spec
            if flag:
                flags.add(flag)
        inpainting, ip2p = "inpainting" in flags, "instruct-pix2pix" in flags

        # 2. name, metadata
        infos = [a_info, b_info, c_info]
        ckpt_dir = output_dir or (registry.extra_dirs[0] if registry.extra_dirs else registry.checkpoints_dir)
        filename = _output_name(req, a_info, b_info, c_info, inpainting, ip2p)
        output = os.path.join(ckpt_dir, filename)
        os.makedirs(os.path.dirname(output), exist_ok=True)

        metadata: dict[str, Any] = {}
        if req.save_metadata:
            metas = [read_checkpoint_metadata(i.filename) if i else {} for i in infos]
            if req.copy_metadata_fields:
                for meta in metas:
                    metadata.update(meta)
            metadata.update(user_metadata)
            metadata["format"] = "pt"
            if req.add_merge_recipe:
                report("Hashing", 0, 0)
                infos = [registry.ensure_hash(i) if i else None for i in infos]
                metadata.update(_merge_recipe_metadata(req, infos, metas, inpainting, ip2p))
        metadata_text = {str(k): _metadata_text(v) for k, v in metadata.items()}

        # 3. compute and write, one tensor at a time
        total = len(keys)
        logger.info("Saving to %s...", output)
        if req.checkpoint_format == "safetensors":
            header, order = _safetensors_header(planned, metadata_text or None)

            def write(f):
                f.write(len(header).to_bytes(8, "little"))
                f.write(header)
                for i, key in enumerate(order):
                    report("Merging A and B" if merging else "Converting", i, total)
                    value = merger.compute(key)
                    expected = planned[key]
                    if value.dtype != expected.dtype or value.shape != expected.shape:  # pragma: no cover - guard
                        raise MergeError(
                            f"internal error: {key} planned {expected.dtype} {tuple(expected.shape)}, "
                            f"got {value.dtype} {tuple(value.shape)}"
                        )
                    f.write(_tensor_bytes(value))
                    del value

            atomic_write(output, write)
        else:
            # A1111 torch.save(theta_0): the flat state dict, no metadata
            theta_0: dict[str, torch.Tensor] = {}
            for i, key in enumerate(keys):
                report("Merging A and B" if merging else "Converting", i, total)
                value = merger.compute(key)
                theta_0[key] = value
            atomic_write(output, lambda f: torch.save(theta_0, f))
            del theta_0
            metadata_text = {}
    finally:
        for s in sources:
            s.close()

    report("Saving", total, total)
    config_filename = _copy_config(output, int(req.config_source), [a_info, b_info, c_info])

    registry.refresh()
    created = next((i for i in registry.list() if os.path.abspath(i.filename) == os.path.abspath(output)), None)
    if created is not None:
        created = registry.ensure_hash(created)  # A1111: created_model.calculate_shorthash()
    logger.info("Checkpoint saved to %s.", output)
    return MergeResult(
        filename=output,
        checkpoint=created,
        message="Checkpoint saved to " + output,
        is_inpainting=inpainting,
        is_instruct_pix2pix=ip2p,
        metadata=metadata_text,
        config_filename=config_filename,
        tensors=total,
    )


def read_metadata(registry: CheckpointRegistry, names: Iterable[str | None]) -> str:
    """A1111 ``extras.read_metadata`` ("Read metadata from selected checkpoints"): the metadata of the named
    checkpoints merged in order, as indented JSON; unknown or empty names are skipped, as in A1111."""
    metadata: dict[str, Any] = {}
    for name in names:
        info = registry.resolve(name) if name else None
        if info is None:
            continue
        metadata.update(read_checkpoint_metadata(info.filename))
    return json.dumps(metadata, indent=4, ensure_ascii=False)
