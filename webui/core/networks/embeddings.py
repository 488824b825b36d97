"""Textual-inversion embeddings as A1111 v1.10.1 finds, sorts and substitutes them.

Reproduces ``modules/textual_inversion/textual_inversion.py`` (``EmbeddingDatabase``, ``create_embedding_from_data``,
``load_from_file``), the lookup of ``find_embedding_at_position`` that ``sd_hijack_clip.tokenize_line`` uses, and
``sd_hijack.EmbeddingsWithFixes.forward`` (the vectors written over the token embeddings). What differs is the
plumbing: no hijacked modules and no ``shared.sd_model``; the database is told which model to fit
(``load(components)``), and the substitution runs through a forward hook on the text encoder's token-embedding module
that lives only for one call (:func:`embedding_fixes`), never a patched class.

Files: ``.pt``/``.bin`` go through ``torch.load(weights_only=True)`` (a pickle that wants to run code is refused and
logged), ``.safetensors`` through safetensors, and ``.png``/``.webp`` (A1111's image embeddings) through their
``sd-ti-embedding`` text chunk or the data hidden in the image's side strips. Layouts: A1111's own
``{"string_to_param": {"*": t}, "step", "sd_checkpoint", "sd_checkpoint_name"}``, any single-tensor dict (diffusers
``learned_embeds.bin`` ``{"<token>": t}``, kohya's ``{"emb_params": t}``) and SDXL's ``{"clip_l": t, "clip_g": t}``.
The embedding's name is the file name without extension (for images, the name stored inside).

Nothing happens at import and nothing is global: ``AppState`` owns one ``EmbeddingDatabase``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import pickle
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import torch

from webui.core.models.registry import HashCache, natural_sort_key

logger = logging.getLogger(__name__)

EMBEDDING_FILE_EXTENSIONS = (".pt", ".bin", ".safetensors")
IMAGE_EXTENSIONS = (".png", ".webp", ".jxl", ".avif")  # A1111 load_from_file's image list
ENCODER_KINDS = ("sd1", "sd2", "sdxl_l", "sdxl_g")
HASH_TITLE_PREFIX = "textual_inversion/"  # A1111: hashes.sha256(path, "textual_inversion/" + name)
SHORTHASH_LENGTH = 12  # A1111 Embedding.set_hash: self.hash[0:12]


class EmbeddingFormatError(ValueError):
    """A file is not an embedding in any layout A1111 reads."""


@dataclass
class Embedding:
    """One textual-inversion embedding (A1111 ``Embedding``).

    ``vec`` is ``[vectors, width]`` for single-encoder embeddings; SDXL embeddings carry ``vec_by_encoder`` with
    ``"clip_l"`` and ``"clip_g"`` instead. ``shape`` is A1111's ``embedding.shape``, the number reported by
    ``/sdapi/v1/embeddings`` and compared by the skip rule: the vector width, and for an SDXL pair the *sum* of both
    widths (768 + 1280 = 2048), as A1111 reports it. Tensors are kept on the CPU in float32 and cast to the text
    encoder's device and dtype when substituted. ``hash`` is the file's sha256 and ``shorthash`` its first 12 hex
    digits, what A1111 writes in ``TI hashes``.
    """

    name: str
    vectors: int
    shape: int
    vec: torch.Tensor | None = field(default=None, repr=False)
    vec_by_encoder: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    filename: str | None = None
    hash: str | None = None
    shorthash: str | None = None

    @property
    def is_sdxl_pair(self) -> bool:
        return self.vec_by_encoder is not None

    def set_hash(self, value: str | None) -> None:
        """A1111 ``Embedding.set_hash``."""
        self.hash = value or None
        self.shorthash = value[0:SHORTHASH_LENGTH] if value else None

    def api_item(self) -> dict:
        """A1111 ``get_embeddings.convert_embedding``."""
        return {
            "step": self.step,
            "sd_checkpoint": self.sd_checkpoint,
            "sd_checkpoint_name": self.sd_checkpoint_name,
            "shape": self.shape,
            "vectors": self.vectors,
        }


# ---------------------------------------------------------------------------------------------------------------
# Reading one file


def _plain(value: Any) -> Any:
    """A stored ``step`` may be a 0-d tensor (safetensors only stores tensors); the API needs a plain number."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def _as_matrix(t: torch.Tensor) -> torch.Tensor:
    """``[width]`` -> ``[1, width]``; float32 on the CPU (A1111 casts every embedding to float32)."""
    t = t.detach()
    if t.ndim == 1:
        t = t.unsqueeze(0)
    return t.to(device="cpu", dtype=torch.float32)


def _unidentified(filename: str) -> EmbeddingFormatError:
    return EmbeddingFormatError(
        f"Couldn't identify {filename} as neither textual inversion embedding nor diffuser concept."
    )


def create_embedding_from_data(data: Any, name: str, filename: str = "unknown embedding file") -> Embedding:
    """A1111 ``create_embedding_from_data``: recognise the layout and build an :class:`Embedding` (no hash).

    Raises :class:`EmbeddingFormatError` for anything else, with A1111's wording.
    """
    if not isinstance(data, dict) or not data:
        raise _unidentified(filename)
    if "string_to_param" in data:  # A1111's own files
        param_dict = data["string_to_param"]
        param_dict = getattr(param_dict, "_parameters", param_dict)  # A1111: files saved by torch 1.11
        if not isinstance(param_dict, dict) or len(param_dict) != 1:
            raise EmbeddingFormatError(f"{filename}: embedding file has multiple terms in it")
        emb = next(iter(param_dict.values()))
        if not isinstance(emb, torch.Tensor):
            raise EmbeddingFormatError(f"{filename}: string_to_param holds no tensor")
        vec = _as_matrix(emb)
        embedding = Embedding(name=name, vectors=vec.shape[0], shape=vec.shape[-1], vec=vec)
    elif "clip_g" in data and "clip_l" in data:  # SDXL: one set of vectors per text encoder
        pair = {k: _as_matrix(data[k]) for k in ("clip_l", "clip_g") if isinstance(data[k], torch.Tensor)}
        if len(pair) != 2:
            raise EmbeddingFormatError(f"{filename}: clip_l/clip_g are not tensors")
        embedding = Embedding(
            name=name,
            vectors=pair["clip_g"].shape[0],  # A1111: data['clip_g'].shape[0]
            shape=pair["clip_g"].shape[-1] + pair["clip_l"].shape[-1],
            vec_by_encoder=pair,
        )
    elif isinstance(next(iter(data.values())), torch.Tensor):  # diffusers concepts, kohya's emb_params
        if len(data) != 1:
            raise EmbeddingFormatError(f"{filename}: embedding file has multiple terms in it")
        vec = _as_matrix(next(iter(data.values())))
        embedding = Embedding(name=name, vectors=vec.shape[0], shape=vec.shape[-1], vec=vec)
    else:
        raise _unidentified(filename)
    embedding.step = _plain(data.get("step"))
    embedding.sd_checkpoint = _plain(data.get("sd_checkpoint"))
    embedding.sd_checkpoint_name = _plain(data.get("sd_checkpoint_name"))
    return embedding


def _embedding_json(raw: bytes | str) -> Any:
    """A1111 ``EmbeddingDecoder``: JSON whose tensors are ``{"TORCHTENSOR": nested lists}`` (JSON only: nothing in
    it can run code)."""

    def hook(d):
        if "TORCHTENSOR" in d:
            return torch.tensor(d["TORCHTENSOR"], dtype=torch.float32)
        return d

    return json.loads(raw, object_hook=hook)


def embedding_from_b64(text: str | bytes) -> Any:
    """A1111 ``image_embedding.embedding_from_b64``: the PNG ``sd-ti-embedding`` text chunk."""
    return _embedding_json(base64.b64decode(text))


def _lcg(m: int = 2**32, a: int = 1664525, c: int = 1013904223, seed: int = 0) -> Iterator[int]:
    """A1111 ``image_embedding.lcg``: the fixed pseudo-random stream that masks the hidden data."""
    while True:
        seed = (a * seed + c) % m
        yield seed % 255


def _xor_block(block):
    import numpy as np

    g = _lcg()
    mask = np.array([next(g) for _ in range(int(np.prod(block.shape)))]).astype(np.uint8).reshape(block.shape)
    return np.bitwise_xor(block.astype(np.uint8), mask & 0x0F)


def _crop_black(img, tol: int = 0):
    mask = (img > tol).all(2)
    mask0, mask1 = mask.any(0), mask.any(1)
    col_start, col_end = mask0.argmax(), mask.shape[1] - mask0[::-1].argmax()
    row_start, row_end = mask1.argmax(), mask.shape[0] - mask1[::-1].argmax()
    return img[row_start:row_end, col_start:col_end]


def extract_image_data_embed(image) -> Any:
    """A1111 ``image_embedding.extract_image_data_embed``: the embedding A1111's trainer hides in the low nibbles of
    two strips left and right of a preview image (zlib-compressed JSON). None when the image has no such strips."""
    import numpy as np

    d = 3
    rgb = image.convert("RGB")
    outarr = _crop_black(np.array(rgb.getdata()).reshape(rgb.size[1], rgb.size[0], d).astype(np.uint8)) & 0x0F
    black_cols = np.where(np.sum(outarr, axis=(0, 2)) == 0)
    if black_cols[0].shape[0] < 2:
        return None
    lower = _xor_block(outarr[:, : black_cols[0].min(), :].astype(np.uint8))
    upper = _xor_block(outarr[:, black_cols[0].max() + 1 :, :].astype(np.uint8))
    block = ((upper << 4) | lower).flatten().tobytes()
    return _embedding_json(zlib.decompress(block))


def _read_image_embedding(path: str, name: str) -> tuple[dict | None, str]:
    """A1111 ``load_from_file`` for images: ``x.preview.png`` is a thumbnail, never an embedding; otherwise the
    ``sd-ti-embedding`` text chunk, else the hidden strips; an image with neither is just an image (None)."""
    if os.path.splitext(name)[1].lower() == ".preview":
        return None, name
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
    except UnidentifiedImageError:  # e.g. .jxl/.avif without a Pillow plugin: not readable, so not an embedding
        logger.debug("cannot open %s as an image; not an embedding", path)
        return None, name
    with image:
        text = getattr(image, "text", None) or {}
        if "sd-ti-embedding" in text:
            data = embedding_from_b64(text["sd-ti-embedding"])
        else:
            data = extract_image_data_embed(image)
            if not data:
                return None, name
    return data, data.get("name", name) if isinstance(data, dict) else name


def load_embedding_file(
    path: str, hash_cache: HashCache | None = None, no_hashing: bool = False
) -> Embedding | None:
    """A1111 ``EmbeddingDatabase.load_from_file`` minus the registering: read one file, return its
    :class:`Embedding` (hashed through ``hash_cache`` under ``textual_inversion/<name>``), or None when the file is
    not an embedding at all (other extensions, plain preview images). Unreadable files raise."""
    filename = os.path.basename(path)
    name, ext = os.path.splitext(filename)
    ext = ext.lower()
    if ext in IMAGE_EXTENSIONS:
        data, name = _read_image_embedding(path, name)
        if data is None:
            return None
    elif ext in (".pt", ".bin"):
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            lines = str(e).strip().splitlines() or [type(e).__name__]
            reason = next((ln.strip() for ln in lines if "WeightsUnpickler error" in ln), lines[0])
            raise EmbeddingFormatError(
                f"not loaded {path}: not a tensor-only pickle ({reason}); a file that needs code to load is refused"
            ) from e
    elif ext == ".safetensors":
        from safetensors.torch import load

        # from bytes, not safetensors' load_file: its tensors stay mapped to the file, so a file rewritten in place
        # would change (or, truncated, crash) an embedding already loaded
        with open(path, "rb") as f:
            data = load(f.read())
    else:
        return None
    embedding = create_embedding_from_data(data, name, filename=filename)
    embedding.filename = path
    cache = hash_cache if hash_cache is not None else HashCache(None)
    title = HASH_TITLE_PREFIX + name
    embedding.set_hash(cache.sha256_from_cache(path, title) if no_hashing else cache.sha256(path, title))
    return embedding


# ---------------------------------------------------------------------------------------------------------------
# Which embeddings fit a model


@dataclass(frozen=True)
class EmbeddingTarget:
    """The text-encoder widths a model's embeddings must have (A1111 ``get_expected_shape``).

    SD1 (CLIP-L 768), SD2 (OpenCLIP-H 1024) and the SDXL refiner (OpenCLIP-bigG 1280 only) take one tensor of that
    width; SDXL base takes a ``clip_l``/``clip_g`` pair.
    """

    arch: str | None
    width: int | None = None  # single-encoder models
    clip_l: int | None = None  # SDXL base
    clip_g: int | None = None

    @property
    def expected_shape(self) -> int:
        """A1111's ``expected_shape``: the conditioner's ``encode_embedding_init_text`` width (SDXL: l + g); -1 when
        no model is known, which accepts everything, as A1111 before its first model load."""
        if self.arch is None:
            return -1
        if self.width is not None:
            return self.width
        return (self.clip_l or 0) + (self.clip_g or 0)

    def fits(self, e: Embedding) -> bool:
        """A1111's rule ``expected_shape == embedding.shape``, made exact per encoder: an SDXL model takes only a
        pair whose ``clip_l`` and ``clip_g`` widths match its encoders, a single-encoder model only a single tensor.
        A1111 compares the total width alone, so it would also accept e.g. a swapped pair and then fail in the middle
        of a generation; such files are skipped here instead."""
        if self.arch is None:
            return True
        if e.shape != self.expected_shape:
            return False
        if self.width is not None:
            return e.vec is not None
        pair = e.vec_by_encoder
        return pair is not None and pair["clip_l"].shape[-1] == self.clip_l and pair["clip_g"].shape[-1] == self.clip_g


def _token_width(encoder) -> int:
    return int(encoder.get_input_embeddings().weight.shape[1])


def embedding_target(components) -> EmbeddingTarget:
    """What embeddings the loaded model accepts, read from its text encoders' token-embedding widths."""
    if components is None:
        return EmbeddingTarget(arch=None)
    arch = components.arch
    if arch == "SDXL":
        return EmbeddingTarget(
            arch, clip_l=_token_width(components.text_encoder), clip_g=_token_width(components.text_encoder_2)
        )
    if arch == "SDXL-refiner":
        return EmbeddingTarget(arch, width=_token_width(components.text_encoder_2))
    return EmbeddingTarget(arch, width=_token_width(components.text_encoder))


# ---------------------------------------------------------------------------------------------------------------
# The database


class EmbeddingDatabase:
    """A1111 ``EmbeddingDatabase``: the embeddings folders (``--embeddings-dir`` and any extra), scanned on demand.

    ``load(components)`` (re)reads every file when a folder's mtime grew since the last scan (A1111's
    ``DirWithTextualInversionEmbeddings.has_changed``: only the folder's own mtime, so files added or removed are
    noticed, a file rewritten in place or a change inside a sub-folder is not until ``force=True``, as in A1111),
    when the model to fit changed (A1111 force-reloads on every model load), or when ``force=True``
    (``/sdapi/v1/refresh-embeddings``). The constructor reads nothing.

    Thread-safe: the queue worker loads and looks up, request threads list.
    """

    def __init__(
        self, dirs: Iterable[str | os.PathLike], hash_cache: HashCache | None = None, no_hashing: bool = False
    ):
        self.dirs = [os.path.abspath(os.fspath(d)) for d in dirs]
        self.hash_cache = hash_cache if hash_cache is not None else HashCache(None)
        self.no_hashing = no_hashing
        self._lock = threading.RLock()
        self._dir_mtimes: dict[str, float | None] = {d: None for d in self.dirs}
        self._target: EmbeddingTarget | None = None
        self._registered: dict[str, Embedding] = {}  # registration order (the ids_lookup tie order)
        self._skipped: dict[str, Embedding] = {}
        self._errors: dict[str, str] = {}
        self._lookups: dict[int, tuple[Any, dict[int, list[tuple[list[int], Embedding]]]]] = {}
        self._displayed: tuple = ()
        self._overrides: dict[str, Embedding] = {}  # in-memory embeddings answering for their names (training)

    # -- scanning ---------------------------------------------------------------------------------------------
    def _dirs_changed(self) -> bool:
        for d in self.dirs:
            if not os.path.isdir(d):
                continue
            stored = self._dir_mtimes.get(d)
            if stored is None or os.path.getmtime(d) > stored:
                return True
        return False

    def _files(self, folder: str) -> Iterator[str]:
        """Every file under ``folder`` (symlinked folders followed, as A1111's os.walk(followlinks=True)), in a
        stable order: folders and files in natural name order (A1111 takes whatever order the file system gives)."""
        if not os.path.isdir(folder):
            return
        for root, dirs, files in os.walk(folder, followlinks=True):
            dirs.sort(key=natural_sort_key)
            for fn in sorted(files, key=natural_sort_key):
                yield os.path.join(root, fn)

    def load(self, components=None, force: bool = False) -> bool:
        """Sort every embedding file into loaded / skipped for ``components`` (a loaded ``ModelComponents``, or None
        before any model is loaded). Returns whether the folders were read again. Never raises for a bad file: it is
        logged and listed in :attr:`errors`."""
        target = embedding_target(components)
        with self._lock:
            if not force and target == self._target and not self._dirs_changed():
                return False
            registered: dict[str, Embedding] = {}
            skipped: dict[str, Embedding] = {}
            errors: dict[str, str] = {}
            mtimes: dict[str, float | None] = {}
            for folder in self.dirs:
                for path in self._files(folder):
                    try:
                        if os.stat(path).st_size == 0:
                            continue
                        embedding = load_embedding_file(path, self.hash_cache, self.no_hashing)
                    except Exception as e:  # A1111: errors.report("Error loading embedding ...") and go on
                        expected = isinstance(e, EmbeddingFormatError)  # a traceback only for the unexpected
                        logger.error("Error loading embedding %s: %s", path, e, exc_info=not expected)
                        errors[path] = f"{type(e).__name__}: {e}"
                        continue
                    if embedding is None:
                        continue
                    if target.fits(embedding):
                        # A1111 register_embedding_by_name: a later file of the same name replaces the earlier one
                        # and goes to the end of the lookup order.
                        registered.pop(embedding.name, None)
                        registered[embedding.name] = embedding
                    else:
                        skipped[embedding.name] = embedding
                mtimes[folder] = os.path.getmtime(folder) if os.path.isdir(folder) else None
            self._registered, self._skipped, self._errors = registered, skipped, errors
            self._dir_mtimes.update(mtimes)
            self._target = target
            self._lookups = {}
            displayed = (tuple(self.loaded), tuple(skipped))
            if displayed != self._displayed:
                self._displayed = displayed
                logger.info("Textual inversion embeddings loaded(%d): %s", len(registered), ", ".join(displayed[0]))
                if skipped:
                    logger.info("Textual inversion embeddings skipped(%d): %s", len(skipped), ", ".join(skipped))
            return True

    # -- queries ----------------------------------------------------------------------------------------------
    @property
    def loaded(self) -> dict[str, Embedding]:
        """Embeddings that fit the model, by name, sorted case-insensitively (A1111 re-sorts ``word_embeddings``)."""
        with self._lock:
            return {e.name: e for e in sorted(self._registered.values(), key=lambda e: e.name.lower())}

    @property
    def skipped(self) -> dict[str, Embedding]:
        """Embeddings whose width does not fit the model, in scan order."""
        with self._lock:
            return dict(self._skipped)

    @property
    def errors(self) -> dict[str, str]:
        """Files that could not be read at the last scan: path -> reason."""
        with self._lock:
            return dict(self._errors)

    def get(self, name: str) -> Embedding | None:
        with self._lock:
            return self._overrides.get(name) or self._registered.get(name)

    @contextlib.contextmanager
    def overriding(self, embedding: Embedding) -> Iterator[None]:
        """Within the block ``embedding`` (an in-memory one, e.g. the vectors being trained) answers for its name in
        prompts, whatever the folders hold -- A1111's trainer renders its previews with the embedding in training,
        not the file. Undone on leaving."""
        with self._lock:
            previous = self._overrides.get(embedding.name)
            self._overrides[embedding.name] = embedding
            self._lookups = {}
        try:
            yield
        finally:
            with self._lock:
                if previous is None:
                    self._overrides.pop(embedding.name, None)
                else:
                    self._overrides[embedding.name] = previous
                self._lookups = {}

    def api_listing(self) -> dict[str, dict[str, dict]]:
        """``GET /sdapi/v1/embeddings``: ``{"loaded": {name: item}, "skipped": {name: item}}`` (A1111
        ``get_embeddings``), as of the last :meth:`load`."""
        return {
            "loaded": {name: e.api_item() for name, e in self.loaded.items()},
            "skipped": {name: e.api_item() for name, e in self.skipped.items()},
        }

    def _ids_lookup(self, tokenizer) -> dict[int, list[tuple[list[int], Embedding]]]:
        """A1111 ``ids_lookup``: first token id -> [(name ids, embedding)], longest name first, ties in registration
        order. Built once per tokenizer (SD2 and SDXL's second encoder tokenize with their own tokenizer)."""
        with self._lock:
            cached = self._lookups.get(id(tokenizer))
            if cached is not None and cached[0] is tokenizer:
                return cached[1]
            lookup: dict[int, list[tuple[list[int], Embedding]]] = {}
            registered = self._registered
            if self._overrides:
                registered = {n: e for n, e in registered.items() if n not in self._overrides} | self._overrides
            for name, embedding in registered.items():
                ids = list(tokenizer([name], truncation=False, add_special_tokens=False)["input_ids"][0])
                if not ids:
                    logger.warning("embedding name %r has no tokens; it can never be used in a prompt", name)
                    continue
                lookup.setdefault(ids[0], []).append((ids, embedding))
            for first in lookup:
                lookup[first].sort(key=lambda x: len(x[0]), reverse=True)  # stable: ties keep registration order
            self._lookups[id(tokenizer)] = (tokenizer, lookup)  # the tokenizer is kept so its id is never reused
            return lookup

    def find_embedding_at_position(self, tokens: Sequence[int], offset: int, tokenizer) -> tuple[Embedding | None, int]:
        """A1111 ``find_embedding_at_position``: the loaded embedding whose name's tokens start at ``tokens[offset]``
        (the longest such name), and how many prompt tokens it covers; ``(None, 0)`` when none does (A1111 returns
        ``(None, None)``)."""
        possible = self._ids_lookup(tokenizer).get(tokens[offset])
        if not possible:
            return None, 0
        tokens = list(tokens)
        for ids, embedding in possible:
            if tokens[offset : offset + len(ids)] == ids:
                return embedding, len(ids)
        return None, 0


# ---------------------------------------------------------------------------------------------------------------
# Substitution


def embedding_vectors_for(embedding: Embedding | torch.Tensor, encoder_kind: str) -> torch.Tensor:
    """The vectors for one text encoder: ``"sdxl_g"`` takes an SDXL pair's ``clip_g``, every other kind its
    ``clip_l`` (A1111 ``EmbeddingsWithFixes.textual_inversion_key``); single-tensor embeddings give their only
    tensor to any encoder, as in A1111. A bare tensor is returned as is."""
    if encoder_kind not in ENCODER_KINDS:
        raise ValueError(f"unknown encoder kind {encoder_kind!r}; choose one of {', '.join(ENCODER_KINDS)}")
    if isinstance(embedding, torch.Tensor):
        return embedding
    if embedding.vec_by_encoder is not None:
        return embedding.vec_by_encoder["clip_g" if encoder_kind == "sdxl_g" else "clip_l"]
    assert embedding.vec is not None
    return embedding.vec


Fix = tuple[int, "Embedding | torch.Tensor"]


def substitute_embeddings(
    inputs_embeds: torch.Tensor, fixes: Sequence[Sequence[Fix]] | None, encoder_kind: str = "sd1"
) -> torch.Tensor:
    """A1111 ``EmbeddingsWithFixes.forward``: for each batch row, write each embedding's vectors over rows
    ``offset+1 .. offset+n`` of the token embeddings (``offset`` counts prompt tokens, the +1 skips the start token),
    cut at the end of the window (``min(T - offset - 1, n)`` vectors, as A1111). ``fixes`` holds one list of
    ``(offset, Embedding or [n, width] tensor)`` per row. Returns a new tensor; the input is not modified."""
    if not fixes or max(len(f) for f in fixes) == 0:
        return inputs_embeds
    if len(fixes) != inputs_embeds.shape[0]:
        raise ValueError(f"{len(fixes)} rows of embedding fixes for a batch of {inputs_embeds.shape[0]}")
    rows = []
    for row_fixes, tensor in zip(fixes, inputs_embeds):
        for offset, embedding in row_fixes:
            emb = embedding_vectors_for(embedding, encoder_kind).to(device=tensor.device, dtype=tensor.dtype)
            emb_len = max(0, min(tensor.shape[0] - offset - 1, emb.shape[0]))
            tensor = torch.cat([tensor[0 : offset + 1], emb[0:emb_len], tensor[offset + 1 + emb_len :]])
        rows.append(tensor)
    return torch.stack(rows)


@contextlib.contextmanager
def embedding_fixes(encoder, fixes: Sequence[Sequence[Fix]] | None, encoder_kind: str) -> Iterator[None]:
    """Within the block, the next forward of ``encoder``'s token-embedding module gets the embeddings written in.

    A forward hook on that one module instance (``encoder.get_input_embeddings()``), removed on exit even on error:
    the model class is never patched and no state outlives the call. One-shot, as A1111's ``EmbeddingsWithFixes``
    clears ``hijack.fixes`` after its first use. (transformers 5's ``CLIPTextModel.forward`` takes no
    ``inputs_embeds``, so a hook is the clean way in.)
    """
    if not fixes or max(len(f) for f in fixes) == 0:
        yield
        return
    pending = [fixes]

    def hook(_module, _args, output):
        if not pending:
            return output
        return substitute_embeddings(output, pending.pop(), encoder_kind)

    handle = encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def encode_with_embeddings(
    encoder, input_ids: torch.Tensor, fixes: Sequence[Sequence[Fix]] | None, encoder_kind: str, **kwargs
):
    """Run a transformers ``CLIPTextModel``/``CLIPTextModelWithProjection`` on ``input_ids`` with the embeddings of
    ``fixes`` substituted (see :func:`embedding_fixes`); ``kwargs`` go to the encoder (e.g.
    ``output_hidden_states=True``). Returns the encoder's output."""
    with embedding_fixes(encoder, fixes, encoder_kind):
        return encoder(input_ids=input_ids, **kwargs)


def ti_hashes_infotext(used: dict[str, Embedding] | Iterable[Embedding], previous: str | None = None) -> str | None:
    """A1111's ``TI hashes`` value after one text-encoder pass (``sd_hijack_clip.forward``): ``name: shorthash``
    for each used embedding with a hash, ``:`` and ``,`` removed from names, joined by ``", "``; an earlier value
    (from the previous pass, e.g. the positive prompt before the negative) is appended after the new ones.
    Returns ``previous`` unchanged when nothing new has a hash."""
    items = used.items() if isinstance(used, dict) else ((e.name, e) for e in used)
    hashes = []
    for name, embedding in items:
        if not embedding.shorthash:
            continue
        name = name.replace(":", "").replace(",", "")
        hashes.append(f"{name}: {embedding.shorthash}")
    if not hashes:
        return previous
    if previous:
        hashes.append(previous)
    return ", ".join(hashes)
