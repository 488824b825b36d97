"""DeepDanbooru tagging as A1111 v1.10.1 does it (``modules/deepbooru.py``): the image, resized and filled to
512x512, through TorchDeepDanbooru (:mod:`.deepbooru_model`), then the tags scoring at least the threshold, formatted
by the ``deepbooru_*`` options.

The weights are ``model-resnet_custom_v3.pt`` in ``models/torch_deepdanbooru`` (A1111 1.10's folder; older A1111
used ``models/DeepDanbooru``, also searched). A1111 downloads the file when the folder holds no ``.pt``; this server
never does: the error names the file, the folder and the URL instead.
"""

from __future__ import annotations

import os
import pickle
import re
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from webui.core.interrogate import InterrogateFolders, InterrogatorUnavailable
from webui.core.interrogate.deepbooru_model import DeepDanbooruModel
from webui.core.models.registry import _walk_files

MODEL_FILENAME = "model-resnet_custom_v3.pt"
#: Where A1111 downloads the weights from (its ``modelloader.load_models(model_url=...)``).
MODEL_URL = "https://github.com/AUTOMATIC1111/TorchDeepDanbooru/releases/download/v1/model-resnet_custom_v3.pt"
#: The image size the model was trained on; A1111 resizes every image to it.
IMAGE_SIZE = 512
#: A1111's ``re_special``: backslashes and parentheses, escaped so the prompt parser keeps them literal.
RE_SPECIAL = re.compile(r"([\\()])")


def find_model_file(folders: tuple[str, ...]) -> str | None:
    """The weights to load: ``model-resnet_custom_v3.pt`` at the top of a folder when present, else the first
    ``.pt`` of A1111's ``modelloader.load_models`` walk (folders in order, natural sort, subfolders included).
    A1111 only takes the walk's first file; preferring the released name keeps another ``.pt`` dropped beside it
    from being loaded in its place."""
    for folder in folders:
        path = os.path.join(folder, MODEL_FILENAME)
        if os.path.isfile(path):
            return path
    for folder in folders:
        for path in _walk_files(folder, (".pt",)):
            return path
    return None


def missing_model_message(folders: tuple[str, ...]) -> str:
    where = " or ".join(folders) if folders else "models/torch_deepdanbooru"
    target = folders[0] if folders else "models/torch_deepdanbooru"
    return (
        f"DeepDanbooru needs {MODEL_FILENAME}, and no .pt file was found in {where} "
        f"(A1111's models/torch_deepdanbooru). A1111 downloads it from {MODEL_URL}; this server downloads nothing: "
        f"save that file as {os.path.join(target, MODEL_FILENAME)}."
    )


def load_model_file(path: str) -> DeepDanbooruModel:
    """Read a TorchDeepDanbooru file (on the CPU, without running pickled code: the file holds only tensors and a
    list of strings) into a model. Any failure is an InterrogatorUnavailable naming the file and the fix."""

    def unusable(reason: str) -> InterrogatorUnavailable:
        return InterrogatorUnavailable(
            f"DeepDanbooru cannot use {path}: {reason}. Replace it with {MODEL_FILENAME} from {MODEL_URL}.")

    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses pickled classes and functions ("Unsupported global") and garbled pickles alike;
        # torch's message then advises loading with weights_only=False, which we never do
        if "Unsupported global" in str(e):
            raise unusable("it holds pickled objects other than tensors and plain data, which loading would run "
                           "as code (refused)") from e
        raise unusable("it is not a readable torch file (the pickle inside is damaged)") from e
    except Exception as e:  # not a torch file, or truncated
        raise unusable(f"it is not a readable torch file ({type(e).__name__}: {_first_line(e)})") from e
    if not isinstance(state_dict, dict):
        raise unusable(f"it holds a {type(state_dict).__name__}, not a TorchDeepDanbooru state dict")
    try:
        return DeepDanbooruModel.from_state_dict(state_dict)
    except ValueError as e:
        raise unusable(f"it is not the TorchDeepDanbooru (resnet custom v3) network: {_first_line(e, 600)}") from e


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DeepBooru:
    """The DeepDanbooru tagger: A1111's ``deepbooru.DeepDanbooru`` (``load``/``start``/``stop``/``tag``/
    ``tag_multi``) on our folders, device and options.

    The model is read on first use and kept on the CPU between calls (in ``dtype``); each call moves it to
    ``device`` and back unless ``interrogate_keep_models_in_memory``. Training preprocessing's caption step calls
    :meth:`start`, :meth:`tag_multi` per image and :meth:`stop`, as A1111's does, to move it once.
    """

    def __init__(self, folders: InterrogateFolders, *, device: Any, dtype: Any, options: Callable[[str], Any]):
        self.folders = folders
        self.device = torch.device(device)
        self.dtype = dtype
        self.options = options
        self.model: DeepDanbooruModel | None = None
        self.model_path: str | None = None
        self._lock = threading.RLock()

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def load(self) -> DeepDanbooruModel:
        """Read the weights when not read yet (A1111 ``load``). Raises InterrogatorUnavailable when the file is
        missing or unusable; a later call looks again (the user may have put the file in place meanwhile)."""
        with self._lock:
            if self.model is None:
                path = find_model_file(self.folders.deepbooru)
                if path is None:
                    raise InterrogatorUnavailable(missing_model_message(self.folders.deepbooru))
                model = load_model_file(path)
                model.eval().requires_grad_(False)
                self.model = model.to(torch.device("cpu"), self.dtype)
                self.model_path = path
            return self.model

    def start(self) -> None:
        """Load, and move the model to the device (A1111 ``start``)."""
        with self._lock:
            self.load().to(self.device)

    def stop(self) -> None:
        """Send the model back to the CPU unless ``interrogate_keep_models_in_memory`` (A1111 ``stop``)."""
        with self._lock:
            if self.model is not None and not self.options("interrogate_keep_models_in_memory"):
                self.model.to(torch.device("cpu"))
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    def unload(self) -> None:
        """Forget the model (the next call reads the file again)."""
        with self._lock:
            self.model = None
            self.model_path = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    # -- tagging -----------------------------------------------------------------------------------------------------

    def tag(self, pil_image: Any) -> str:
        """The tags of one image as a prompt (what ``/sdapi/v1/interrogate`` with ``deepdanbooru`` and the img2img
        "Interrogate DeepBooru" button return). The model is sent back to the CPU even when the call fails."""
        with self._lock:
            self.start()
            try:
                return self.tag_multi(pil_image)
            finally:
                self.stop()

    def probabilities(self, pil_image: Any) -> dict[str, float]:
        """Every tag's score for ``pil_image`` (A1111's input: the RGB image resized and filled to 512x512, values
        0..1, HWC). Runs on the device the model is on now: call :meth:`start` first to use ``device``."""
        from webui.core.generation.imageops import resize_image

        model = self.load()
        picture = resize_image(2, pil_image.convert("RGB"), IMAGE_SIZE, IMAGE_SIZE)
        array = np.expand_dims(np.array(picture, dtype=np.float32), 0) / 255
        weight = model.n_Conv_0.weight
        with torch.inference_mode():
            x = torch.from_numpy(array).to(weight.device, weight.dtype)
            y = model(x)[0].float().cpu().numpy()
        return {tag: float(p) for tag, p in zip(model.tags, y)}

    def tag_multi(self, pil_image: Any, force_disable_ranks: bool = False) -> str:
        """A1111 ``tag_multi``: the tags scoring at least ``interrogate_deepbooru_score_threshold``, ``rating:*``
        tags left out, sorted by name (``deepbooru_sort_alpha``) or by falling score, without those in
        ``deepbooru_filter_tags`` (compared with spaces as underscores), underscores shown as spaces
        (``deepbooru_use_spaces``), ``\\``, ``(`` and ``)`` escaped (``deepbooru_escape``), each as ``(tag:0.123)``
        when ``interrogate_return_ranks`` and not ``force_disable_ranks``; joined by ", "."""
        opt = self.options
        threshold = float(opt("interrogate_deepbooru_score_threshold"))
        use_spaces = bool(opt("deepbooru_use_spaces"))
        use_escape = bool(opt("deepbooru_escape"))
        alpha_sort = bool(opt("deepbooru_sort_alpha"))
        include_ranks = bool(opt("interrogate_return_ranks")) and not force_disable_ranks

        scores = {tag: p for tag, p in self.probabilities(pil_image).items()
                  if p >= threshold and not tag.startswith("rating:")}
        if alpha_sort:
            tags = sorted(scores)
        else:
            tags = [tag for tag, _ in sorted(scores.items(), key=lambda item: -item[1])]

        filter_tags = {x.strip().replace(" ", "_") for x in str(opt("deepbooru_filter_tags") or "").split(",")}
        result = []
        for tag in tags:
            if tag in filter_tags:
                continue
            text = tag
            if use_spaces:
                text = text.replace("_", " ")
            if use_escape:
                text = RE_SPECIAL.sub(r"\\\1", text)
            if include_ranks:
                text = f"({text}:{scores[tag]:.3f})"
            result.append(text)
        return ", ".join(result)
