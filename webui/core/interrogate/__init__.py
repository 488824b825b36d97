"""Interrogate: describe an image as a prompt, as A1111 v1.10.1 does (``modules/interrogate.py``,
``modules/deepbooru.py``).

Two interrogators, named as A1111's API names them (``POST /sdapi/v1/interrogate`` ``model``):

- ``clip``: a BLIP caption (``models/BLIP/model_base_caption_capfilt_large.pth``) followed by the best-ranked
  phrases of each category list in ``interrogate/`` (artists, flavors, mediums, movements), ranked by OpenAI's CLIP
  ViT-L/14 (``ViT-L-14.pt`` in ``--clip-models-path`` or clip's own cache folder). See :mod:`.clip`.
- ``deepdanbooru``: Danbooru tags from TorchDeepDanbooru (``models/torch_deepdanbooru/model-resnet_custom_v3.pt``).
  See :mod:`.deepbooru`.

A1111 downloads these files on first use; this server never downloads anything: a missing file is an
:class:`InterrogatorUnavailable` whose message names each file and the folder to put it in (the API turns it into a
4xx, the UI into a message). Models are loaded on first use on the queue's worker, and sent back to the CPU after
each use unless ``interrogate_keep_models_in_memory`` (A1111's rule).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The ``model`` values ``/sdapi/v1/interrogate`` accepts (api.py:interrogateapi).
INTERROGATE_MODELS = ("clip", "deepdanbooru")


class InterrogatorUnavailable(RuntimeError):
    """An interrogator cannot run because a model file is missing or unreadable. The message names the files and
    where to put them (A1111 would download them; we never do)."""


class UnknownInterrogator(LookupError):
    def __init__(self, name: str):
        super().__init__(f"unknown interrogate model {name!r}; valid: {', '.join(INTERROGATE_MODELS)}")
        self.name = name

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class InterrogateFolders:
    """Where the interrogators' files are, A1111's layout.

    - ``blip``: models/BLIP (the BLIP caption weights; the bert-base-uncased tokenizer files may sit in
      ``models/BLIP/bert-base-uncased/``, else the Hugging Face cache A1111 filled is read, offline).
    - ``deepbooru``: models/torch_deepdanbooru (A1111 1.10), then models/DeepDanbooru (older A1111).
    - ``clip``: ``--clip-models-path`` when given, then ``~/.cache/clip`` (the openai ``clip`` package's default
      download root, where A1111 leaves ViT-L-14.pt), then models/CLIP.
    - ``content_dir``: the category lists, ``interrogate/`` in the data folder (A1111: ``interrogate`` beside the
      program). Filled on first use from the lists the ``clip-interrogator`` package ships -- the files A1111
      downloads from that project -- when the folder does not exist; a user's own lists are kept.
    """

    blip: str
    deepbooru: tuple[str, ...]
    clip: tuple[str, ...]
    content_dir: str

    @classmethod
    def under(cls, data_dir: str, models_dir: str, clip_models_path: str | None = None) -> InterrogateFolders:
        clip_dirs = tuple(d for d in (clip_models_path, os.path.join(os.path.expanduser("~"), ".cache", "clip"),
                                      os.path.join(models_dir, "CLIP")) if d)
        return cls(
            blip=os.path.join(models_dir, "BLIP"),
            deepbooru=(os.path.join(models_dir, "torch_deepdanbooru"), os.path.join(models_dir, "DeepDanbooru")),
            clip=clip_dirs,
            content_dir=os.path.join(data_dir, "interrogate"),
        )

    @classmethod
    def from_config(cls, config: Any) -> InterrogateFolders:
        extra = getattr(config, "extra", lambda name, default=None: default)
        return cls.under(config.data_dir, config.models_dir, extra("clip_models_path"))


class Interrogators:
    """The two interrogators, loaded on first use and kept (weights on the CPU between uses unless
    ``interrogate_keep_models_in_memory``).

    Only the queue's worker thread calls :meth:`interrogate`; the lock guards the lazy construction against a
    second caller (tests, the Caption step of training preprocessing run from a job too).
    ``options`` reads a setting by key (``Settings.get``), so a changed option applies to the next call.
    """

    def __init__(self, folders: InterrogateFolders, *, device: Any, dtype: Any, options: Callable[[str], Any]):
        self.folders = folders
        self.device = device
        self.dtype = dtype
        self.options = options
        self._clip = None
        self._deepbooru = None
        self._lock = threading.RLock()
        # --medvram/--lowvram: frees the device of the offloaded SD model's part before interrogating (A1111
        # interrogate: lowvram.send_everything_to_cpu()); set by build_state once the engine exists
        self.free_device: Callable[[], None] | None = None

    @classmethod
    def from_config(cls, config: Any, plan: Any, settings: Any) -> Interrogators:
        """For a webui Config: its folders; the plan's device, or the CPU with ``--use-cpu interrogate``/``all``
        (A1111's device_interrogate); half precision on a GPU unless ``--no-half`` (A1111's ``load``)."""
        import torch

        device = getattr(plan, "device", None)
        if device is None or config.uses_cpu_for("interrogate"):
            device = torch.device("cpu")
        dtype = torch.float32 if device.type == "cpu" or getattr(config, "no_half", False) else torch.float16
        return cls(InterrogateFolders.from_config(config), device=device, dtype=dtype, options=settings.get)

    # -- the interrogators -------------------------------------------------------------------------------------------

    def clip(self):
        """The BLIP + CLIP interrogator (:class:`webui.core.interrogate.clip.ClipInterrogator`)."""
        with self._lock:
            if self._clip is None:
                from webui.core.interrogate.clip import ClipInterrogator

                self._clip = ClipInterrogator(self.folders, device=self.device, dtype=self.dtype,
                                              options=self.options)
            return self._clip

    def deepbooru(self):
        """The DeepDanbooru tagger (:class:`webui.core.interrogate.deepbooru.DeepBooru`)."""
        with self._lock:
            if self._deepbooru is None:
                from webui.core.interrogate.deepbooru import DeepBooru

                self._deepbooru = DeepBooru(self.folders, device=self.device, dtype=self.dtype, options=self.options)
            return self._deepbooru

    def interrogate(self, image: Any, model: str = "clip") -> str:
        """The prompt for ``image`` (a PIL image) by ``model`` ("clip" or "deepdanbooru"), as A1111's API returns it.

        Raises UnknownInterrogator for another model name and InterrogatorUnavailable when a file is missing."""
        if model in INTERROGATE_MODELS and self.free_device is not None:
            self.free_device()
        if model == "clip":
            return self.clip().interrogate(image)
        if model == "deepdanbooru":
            return self.deepbooru().tag(image)
        raise UnknownInterrogator(model)

    def category_types(self) -> list[str]:
        """The category list names (A1111's ``interrogate.category_types``: the ``*.txt`` stems of the content
        folder), for the ``interrogate_clip_skip_categories`` setting's choices."""
        from webui.core.interrogate.clip import category_types

        return category_types(self.folders.content_dir)

    def unload(self) -> None:
        """Drop both models (``/sdapi/v1/unload-checkpoint`` does not; this is for tests and memory pressure)."""
        with self._lock:
            for model in (self._clip, self._deepbooru):
                if model is not None:
                    model.unload()
