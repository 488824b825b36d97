"""Interrogate CLIP, as A1111 v1.10.1 (``modules/interrogate.py``): a BLIP caption, then for each category list in
the interrogate folder its best phrases by OpenAI CLIP ViT-L/14's image-text similarity, joined with ", ".

The CLIP model is OpenAI's own file ``ViT-L-14.pt`` (what the ``clip`` package A1111 uses downloads: a TorchScript
archive; a plain state dict is read too), loaded with open_clip's OpenAI loader, which builds the model from the
file's tensor shapes; its preprocessing and tokenizer are clip's. The BLIP half is :mod:`.blip`.

The category lists are A1111's: every ``*.txt`` in the content folder is a category, one phrase a line; a name with
``.topN.`` in it (matched on the name without ``.txt``, as A1111 does) keeps its N best. When the folder does not
exist it is filled from the four lists the ``clip-interrogator`` package ships (artists, flavors, mediums,
movements: the files A1111 downloads from that project); a folder that exists is the user's and left alone.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import shutil
import threading
from collections import OrderedDict, namedtuple
from collections.abc import Callable
from pathlib import Path
from typing import Any

from webui.core.interrogate import InterrogateFolders, InterrogatorUnavailable
from webui.core.interrogate import blip as blip_module

log = logging.getLogger(__name__)

#: The file the openai ``clip`` package keeps for ``clip.load("ViT-L/14")`` (A1111's clip_model_name).
CLIP_FILE = "ViT-L-14.pt"
#: The lists A1111 downloads (interrogate.py:download_default_clip_interrogate_categories), shipped in the
#: clip-interrogator package's ``clip_interrogator/data/``.
DEFAULT_CATEGORIES = ("artists", "flavors", "mediums", "movements")
CLIP_INTERROGATOR_DIST = "clip-interrogator"
#: CLIP's text context (clip.tokenize's context_length).
CONTEXT_LENGTH = 77
#: Rows of a category list encoded at once. A1111 encodes a whole (dict-limited) list in one batch; with
#: ``interrogate_clip_dict_limit`` 0 that is 100,000 flavors, so we cut it into chunks: the numbers are the same,
#: the memory is bounded.
TEXT_BATCH = 1024
#: how many encoded line lists (one per category and dict limit) are kept
TEXT_FEATURE_CACHE = 16

Category = namedtuple("Category", ["name", "topn", "items"])
re_topn = re.compile(r"\.top(\d+)\.")


def _default_category_file(name: str) -> Path | None:
    """The clip-interrogator package's copy of ``<name>.txt``, found through its installed file list (the package
    itself is never imported: its module imports BLIP and CLIP model code we do not use)."""
    try:
        dist = importlib.metadata.distribution(CLIP_INTERROGATOR_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(f"clip_interrogator/data/{name}.txt"))
    return path if path.is_file() else None


def install_default_categories(content_dir: str) -> bool:
    """Create ``content_dir`` with A1111's four default lists, copied from the clip-interrogator package, when it
    does not exist (A1111 downloads them there the same way: into ``<dir>_tmp``, then renamed, so a failure leaves
    no half folder). Returns whether it was created; a folder that exists is never touched."""
    if os.path.exists(content_dir):
        return False
    sources = {name: _default_category_file(name) for name in DEFAULT_CATEGORIES}
    absent = [name for name, path in sources.items() if path is None]
    if absent:
        log.error("interrogate: cannot create %s: the %s package's lists %s are not installed (pip install %s)",
                  content_dir, CLIP_INTERROGATOR_DIST, ", ".join(absent), CLIP_INTERROGATOR_DIST)
        return False
    tmpdir = f"{content_dir}_tmp"
    try:
        os.makedirs(tmpdir, exist_ok=True)
        for name, path in sources.items():
            shutil.copyfile(path, os.path.join(tmpdir, f"{name}.txt"))
        os.rename(tmpdir, content_dir)
    finally:
        if os.path.exists(tmpdir):
            shutil.rmtree(tmpdir, ignore_errors=True)
    log.info("interrogate: category lists %s written to %s", ", ".join(DEFAULT_CATEGORIES), content_dir)
    return True


def category_types(content_dir: str) -> list[str]:
    """The category names: the ``*.txt`` stems of ``content_dir`` (A1111's ``interrogate.category_types``), sorted.

    When the folder does not exist yet, the names it will have after the first interrogation (the four default
    lists, when clip-interrogator is installed), so that the ``interrogate_clip_skip_categories`` setting offers
    them before; nothing is written here."""
    if os.path.isdir(content_dir):
        return sorted(f.stem for f in Path(content_dir).glob("*.txt"))
    if os.path.exists(content_dir):
        return []
    return [name for name in DEFAULT_CATEGORIES if _default_category_file(name) is not None]


def find_clip_file(dirs: tuple[str, ...] | list[str]) -> str | None:
    for d in dirs:
        path = os.path.join(d, CLIP_FILE)
        if os.path.isfile(path):
            return path
    return None


def clip_transform(size: int):
    """clip's ``_transform(n_px)``: shorter side to ``size`` BICUBIC, centre crop, RGB, ToTensor, CLIP's
    normalisation (written with torchvision as clip does; open_clip's equivalent takes more options than it
    needs)."""
    from torchvision import transforms
    from torchvision.transforms.functional import InterpolationMode

    return transforms.Compose([
        transforms.Resize(size, interpolation=InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        lambda image: image.convert("RGB"),
        transforms.ToTensor(),
        transforms.Normalize(blip_module.CLIP_MEAN, blip_module.CLIP_STD),
    ])


class ClipInterrogator:
    """A1111's InterrogateModels: BLIP + CLIP, loaded on first use and kept.

    ``interrogate(pil_image)`` -> the prompt. ``options(key)`` reads the Interrogate settings at each call:
    ``interrogate_keep_models_in_memory``, ``interrogate_return_ranks``, ``interrogate_clip_num_beams``,
    ``interrogate_clip_min_length``, ``interrogate_clip_max_length``, ``interrogate_clip_dict_limit``,
    ``interrogate_clip_skip_categories``. Models run on ``device`` in ``dtype`` (half on a GPU, A1111's ``load``)
    and rest on the CPU between calls unless keep-in-memory is on.

    Not thread-safe by design beyond the load: the queue's worker is the one caller (the lock only keeps two
    first calls from loading twice).
    """

    def __init__(self, folders: InterrogateFolders, *, device: Any, dtype: Any, options: Callable[[str], Any]):
        self.folders = folders
        self.device = device
        self.dtype = dtype
        self.options = options
        self.content_dir = folders.content_dir
        self.blip = None  # blip.BlipCaptioner
        self.clip_model = None
        self.clip_preprocess = None
        self.loaded_categories: list[Category] | None = None
        self.skip_categories: list[str] = []
        self._tokenizer = None
        self._lock = threading.Lock()
        # normalised text features by the lines ranked: they do not depend on the image, so each category is
        # encoded once per loaded CLIP model instead of at every call (A1111 re-encodes ~3,300 lines each time);
        # kept on the CPU, a few MB, and dropped with the model
        self._text_features: OrderedDict[tuple, Any] = OrderedDict()

    # -- files -------------------------------------------------------------------------------------------------------

    def missing_files(self) -> list[str]:
        """Each file interrogation needs that is absent, in words (empty when all are there)."""
        missing = blip_module.missing_files(self.folders.blip)
        if find_clip_file(self.folders.clip) is None:
            missing.append(f"{CLIP_FILE} (OpenAI CLIP ViT-L/14) in one of: {', '.join(self.folders.clip)} "
                           f"(--clip-models-path sets the first)")
        return missing

    def _check_files(self) -> None:
        missing = self.missing_files()
        if missing:
            raise InterrogatorUnavailable("Interrogate CLIP cannot run, files missing: " + "; ".join(missing)
                                          + ". Nothing is downloaded: put the files there.")

    # -- loading (interrogate.py: load, load_blip_model, load_clip_model) ----------------------------------------------

    def _clip_precision(self) -> str:
        import torch

        return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.dtype, "fp32")

    def load(self) -> None:
        """Load what is not loaded yet (on the CPU, then moved to the device)."""
        with self._lock:
            if self.blip is None or self.clip_model is None:
                self._check_files()
            if self.blip is None:
                self.blip = blip_module.BlipCaptioner(self.folders.blip)
            if self.clip_model is None:
                self.clip_model, self.clip_preprocess = self._load_clip()
                self._text_features.clear()
        self.blip.to(self.device, self.dtype)
        self.clip_model.to(self.device)

    def _load_clip(self):
        import warnings

        from open_clip.openai import load_openai_model
        from open_clip.tokenizer import SimpleTokenizer

        path = find_clip_file(self.folders.clip)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
                # fp16: open_clip's "manually cast" half model (LayerNorms in float32), as clip.load on a GPU.
                model = load_openai_model(path, precision=self._clip_precision(), device="cpu")
        except Exception as e:  # noqa: BLE001 - an unreadable or foreign file: name it
            raise InterrogatorUnavailable(f"cannot load the CLIP model {path} as OpenAI's ViT-L/14 file: "
                                          f"{type(e).__name__}: {e}") from None
        model.eval()
        self._tokenizer = SimpleTokenizer(context_length=CONTEXT_LENGTH)
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        return model, clip_transform(int(size))

    def _keep(self) -> bool:
        return bool(self.options("interrogate_keep_models_in_memory"))

    def send_clip_to_ram(self) -> None:
        if not self._keep() and self.clip_model is not None:
            self.clip_model.to("cpu")

    def send_blip_to_ram(self) -> None:
        if not self._keep() and self.blip is not None:
            self.blip.to("cpu")

    def offload(self) -> None:
        """Both models to the CPU unless keep-in-memory (A1111's ``InterrogateModels.unload``: they stay loaded);
        done after every interrogation."""
        self.send_clip_to_ram()
        self.send_blip_to_ram()
        _empty_cache(self.device)

    def unload(self) -> None:
        """Drop both models (their memory is freed; the next interrogation reads the files again). For
        :meth:`Interrogators.unload`: tests and memory pressure."""
        with self._lock:
            self.blip = None
            self.clip_model = self.clip_preprocess = self._tokenizer = None
            self._text_features.clear()
        _empty_cache(self.device)

    # -- categories ----------------------------------------------------------------------------------------------------

    def categories(self) -> list[Category]:
        """The category lists, less ``interrogate_clip_skip_categories``; read once and kept while that setting
        is unchanged (A1111's cache rule). Sorted by file name, where A1111 takes the file system's order (which
        is arbitrary on most file systems): the same folder gives the same prompt everywhere."""
        if not os.path.exists(self.content_dir):
            install_default_categories(self.content_dir)
        skip = list(self.options("interrogate_clip_skip_categories") or [])
        if self.loaded_categories is not None and self.skip_categories == skip:
            return self.loaded_categories
        self.loaded_categories = []
        if os.path.exists(self.content_dir):
            self.skip_categories = skip
            for filename in sorted(Path(self.content_dir).glob("*.txt")):
                if filename.stem in skip:
                    continue
                m = re_topn.search(filename.stem)
                topn = 1 if m is None else int(m.group(1))
                with open(filename, encoding="utf8") as file:
                    lines = [x.strip() for x in file]
                self.loaded_categories.append(Category(name=filename.stem, topn=topn, items=lines))
        return self.loaded_categories

    # -- the two halves ------------------------------------------------------------------------------------------------

    def generate_caption(self, pil_image: Any) -> str:
        return self.blip.caption(
            pil_image,
            num_beams=self.options("interrogate_clip_num_beams"),
            min_length=self.options("interrogate_clip_min_length"),
            max_length=self.options("interrogate_clip_max_length"),
            device=self.device, dtype=self.dtype,
        )

    def rank(self, image_features, text_array: list[str], top_count: int = 1) -> list[tuple[str, float]]:
        """A1111's ``rank``: the first ``interrogate_clip_dict_limit`` lines (0 = all), each image feature's
        softmax over ``100 * cosine similarity`` averaged, the ``top_count`` best as (text, probability * 100)."""
        import torch

        limit = self.options("interrogate_clip_dict_limit")
        if limit:
            text_array = text_array[0:int(limit)]
        top_count = min(top_count, len(text_array))
        if top_count <= 0:
            return []
        key = (tuple(text_array), str(self.dtype))
        text_features = self._text_features.get(key)
        if text_features is None:
            chunks = []
            for start in range(0, len(text_array), TEXT_BATCH):
                tokens = self._tokenizer(list(text_array[start:start + TEXT_BATCH])).to(self.device)
                chunks.append(self.clip_model.encode_text(tokens).type(self.dtype))
            text_features = torch.cat(chunks)
            text_features /= text_features.norm(dim=-1, keepdim=True)
            self._text_features[key] = text_features.to("cpu")
            while len(self._text_features) > TEXT_FEATURE_CACHE:
                self._text_features.popitem(last=False)
        else:
            self._text_features.move_to_end(key)
            text_features = text_features.to(self.device)

        similarity = torch.zeros((1, len(text_array))).to(self.device)
        for i in range(image_features.shape[0]):
            similarity += (100.0 * image_features[i].unsqueeze(0) @ text_features.T).softmax(dim=-1)
        similarity /= image_features.shape[0]

        top_probs, top_labels = similarity.cpu().topk(top_count, dim=-1)
        return [(text_array[int(top_labels[0][i])], float(top_probs[0][i].numpy() * 100)) for i in range(top_count)]

    def interrogate(self, pil_image: Any) -> str:
        """The prompt for ``pil_image``: ``"<BLIP caption>, <best phrase of each category>..."``, or with
        ``interrogate_return_ranks`` each phrase as ``(phrase:0.123)`` (its probability).

        Unlike A1111, which returns what it has plus ``<error>`` when a step fails, this raises: a missing or
        unreadable model file is :class:`InterrogatorUnavailable` (the API answers it with a 4xx naming the files),
        anything else propagates. The models go back to the CPU either way (unless keep-in-memory)."""
        import torch

        try:
            self.load()
            caption = self.generate_caption(pil_image)
            self.send_blip_to_ram()
            _empty_cache(self.device)

            res = caption
            clip_image = self.clip_preprocess(pil_image).unsqueeze(0).type(self.dtype).to(self.device)
            with torch.no_grad():
                image_features = self.clip_model.encode_image(clip_image).type(self.dtype)
                image_features /= image_features.norm(dim=-1, keepdim=True)
                return_ranks = self.options("interrogate_return_ranks")
                for cat in self.categories():
                    for match, score in self.rank(image_features, cat.items, top_count=cat.topn):
                        if return_ranks:
                            res += f", ({match}:{score / 100:.3f})"
                        else:
                            res += f", {match}"
            return res
        finally:
            self.offload()


def _empty_cache(device: Any) -> None:
    """A1111's torch_gc, for the device we run on."""
    import torch

    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
