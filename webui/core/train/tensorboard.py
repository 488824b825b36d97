"""Tensorboard logging of training (options ``training_enable_tensorboard``, ``training_tensorboard_save_images``,
``training_tensorboard_flush_every``), as A1111 1.10's ``textual_inversion.py`` does it (``tensorboard_setup``,
``tensorboard_add``, ``tensorboard_add_scaler``, ``tensorboard_add_image``): a ``SummaryWriter`` in
``<log directory>/tensorboard``, four scalars per optimizer step and the previews as images.

Used by both trainers through ``_TrainingLoop``. ``torch.utils.tensorboard`` needs the ``tensorboard`` package; it
is imported only when the option is on, and :func:`open_for_training` refuses the training before anything is written
when it cannot be imported (A1111 imports it at module load and would not start at all without it)."""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import numpy as np

ENABLE_OPTION = "training_enable_tensorboard"
SAVE_IMAGES_OPTION = "training_tensorboard_save_images"
FLUSH_OPTION = "training_tensorboard_flush_every"


def summary_writer_class() -> type:
    """``torch.utils.tensorboard.SummaryWriter``, or a :class:`TrainingInputError` naming the option and the package
    (a 4xx before the job writes anything, never a crash in the middle of a run)."""
    from webui.core.train.args import TrainingInputError

    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise TrainingInputError(ENABLE_OPTION, f"tensorboard logging needs the 'tensorboard' Python package, which "
                                                f"cannot be imported ({e}); install it (pip install tensorboard) or "
                                                f"turn the option off", status=400) from None
    return SummaryWriter


class TrainingTensorboard:
    """One training run's writer. :meth:`add_step` is A1111 ``train_hypernetwork``'s block after each optimizer step;
    :meth:`add_image` its ``tensorboard_add_image`` of a preview; :meth:`close` what A1111 never does (its writer and
    the writer's flushing thread stay until the process ends, events still pending are lost on an error) -- here the
    trainers close it when the run ends, also on interrupt or error."""

    def __init__(self, writer: Any, dataset_len: int, save_images: bool):
        self.writer = writer
        self.dataset_len = dataset_len
        self.save_images = save_images
        # A1111: loss_logging = deque(maxlen=len(ds) * 3) -- "3 * epoch (dataset size)"; the scalar is its mean
        self.loss_logging: deque[float] = deque(maxlen=max(1, dataset_len * 3))

    def add_step(self, loss_step: float, step: int, learn_rate: float) -> int:
        """After optimizer step number ``step`` (the counter already incremented, as in A1111) with that step's loss
        (summed over the accumulation steps): "Loss/train" and "Learn rate/train" at ``global_step`` = ``step``,
        their "/epoch-N" twins at the step within the epoch (A1111: epoch = step // len(ds), epoch step = step -
        epoch * len(ds) + 1, len(ds) being the number of images). Returns the epoch number, which A1111 then also
        uses in the preview image's tag."""
        self.loss_logging.append(loss_step)
        epoch_num = step // self.dataset_len
        epoch_step = step - (epoch_num * self.dataset_len) + 1
        mean_loss = sum(self.loss_logging) / len(self.loss_logging)
        self._scalar("Loss/train", mean_loss, step)
        self._scalar(f"Loss/train/epoch-{epoch_num}", mean_loss, epoch_step)
        self._scalar("Learn rate/train", learn_rate, step)
        self._scalar(f"Learn rate/train/epoch-{epoch_num}", learn_rate, epoch_step)
        return epoch_num

    def _scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag=tag, scalar_value=value, global_step=step)

    def add_image(self, image, epoch_num: int, step: int) -> None:
        """A preview as "Validation at epoch N" at ``step`` (option ``training_tensorboard_save_images``)."""
        if not self.save_images:
            return
        pixels = np.array(image, copy=True)
        if pixels.ndim == 2:  # A1111 views it as (h, w, number of bands): a one-band image gets its channel axis
            pixels = pixels[:, :, None]
        self.writer.add_image(f"Validation at epoch {epoch_num}", pixels, global_step=step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


def check_available(settings) -> None:
    """Refuse (4xx) at the start when the option is on and the package is missing; nothing when the option is off."""
    if settings.get(ENABLE_OPTION):
        summary_writer_class()


def open_for_training(settings, log_directory: str, dataset_len: int) -> TrainingTensorboard | None:
    """A1111 ``tensorboard_setup``: ``<log_directory>/tensorboard``, flushed every ``training_tensorboard_flush_every``
    seconds; ``None`` when the option is off. A1111 opens it just before preparing the dataset; the trainers here
    open it just after, since the epoch arithmetic needs the dataset's length (and a dataset that cannot be read
    leaves no empty event file behind)."""
    if not settings.get(ENABLE_OPTION):
        return None
    writer_class = summary_writer_class()
    path = os.path.join(log_directory, "tensorboard")
    os.makedirs(path, exist_ok=True)
    writer = writer_class(log_dir=path, flush_secs=int(settings.get(FLUSH_OPTION)))
    return TrainingTensorboard(writer, dataset_len, bool(settings.get(SAVE_IMAGES_OPTION)))
