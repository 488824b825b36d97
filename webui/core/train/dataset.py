"""A1111 ``textual_inversion/dataset.py`` (v1.10): the training images as latents, with their captions.

Each image is read once, resized to the training size (bicubic; kept as it is with "do not resize"), encoded by the
model's VAE and kept as a latent on the CPU -- sampled once, or the distribution's mean ("deterministic"), or the
distribution itself, sampled again each time the image is used ("random"). The caption ("filewords") is the
``.txt`` file beside the image, else the file name without leading numbers (``dataset_filename_word_regex`` /
``dataset_filename_join_string`` as in A1111). Prompts come from a random template line with ``[name]`` and
``[filewords]`` replaced (tags shuffled and dropped out per use when asked). With "Use PNG alpha channel as loss
weight" the alpha channel, scaled to the latent size and normalised to a mean of 1, weighs the loss.

Batches are A1111's ``GroupedBatchSampler``: images of one size per batch (so they stack), shuffled every epoch.
"""

from __future__ import annotations

import os
import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

re_numbers_at_start = re.compile(r"^[-\d]+\s*")


@dataclass
class DatasetEntry:
    filename: str
    filename_text: str
    latent_sample: torch.Tensor | None = None  # [4, h, w] on the CPU
    latent_mean: torch.Tensor | None = None  # "random": the distribution, sampled per use
    latent_std: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    cond_text: str | None = None


@dataclass
class Batch:
    cond_text: list[str]
    latent_sample: torch.Tensor  # [B, 4, h, w]
    weight: torch.Tensor | None
    filename: list[str]


def caption_for(path: str, word_regex: str = "", join_string: str = " ") -> str:
    """The caption of one image: its ``.txt`` file, else A1111's file-name rule."""
    text_filename = os.path.splitext(path)[0] + ".txt"
    if os.path.exists(text_filename):
        with open(text_filename, encoding="utf8") as f:
            return f.read()
    text = re.sub(re_numbers_at_start, "", os.path.splitext(os.path.basename(path))[0])
    if word_regex:
        text = (join_string or "").join(re.compile(word_regex).findall(text))
    return text


class PersonalizedDataset:
    """A1111 ``PersonalizedBase``. ``encode(pixels [1, 3, H, W] in [-1, 1]) -> (mean, std)`` of the latent
    distribution, already scaled by the VAE's scaling factor; ``should_stop()`` aborts the (slow) preparation."""

    def __init__(self, files: list[str], *, width: int, height: int, placeholder_token: str, template_lines: list[str],
                 encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], batch_size: int = 1,
                 gradient_step: int = 1, shuffle_tags: bool = False, tag_drop_out: float = 0.0,
                 latent_sampling_method: str = "once", varsize: bool = False, use_weight: bool = False,
                 word_regex: str = "", join_string: str = " ", should_stop: Callable[[], bool] = lambda: False,
                 rng: random.Random | None = None, generator: torch.Generator | None = None):
        self.placeholder_token = placeholder_token
        self.lines = template_lines or [""]
        self.shuffle_tags = shuffle_tags
        self.tag_drop_out = tag_drop_out
        self.rng = rng or random.Random()
        self.generator = generator
        self.dataset: list[DatasetEntry] = []
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for path in files:
            if should_stop():
                raise InterruptedError("interrupted while preparing the dataset")
            try:
                with Image.open(path) as im:
                    image = ImageOps.exif_transpose(im)
                    image.load()
            except Exception:  # A1111: files that are not images are skipped
                continue
            alpha = image.getchannel("A") if use_weight and "A" in image.getbands() else None
            image = image.convert("RGB")
            if not varsize:
                image = image.resize((width, height), Image.BICUBIC)
            pixels = torch.from_numpy((np.array(image).astype(np.uint8) / 127.5 - 1.0).astype(np.float32))
            mean, std = encode(pixels.permute(2, 0, 1).unsqueeze(0))
            mean, std = mean[0].float().cpu(), std[0].float().cpu()
            entry = DatasetEntry(filename=path, filename_text=caption_for(path, word_regex, join_string))
            if latent_sampling_method == "random":
                entry.latent_mean, entry.latent_std = mean, std
            elif latent_sampling_method == "deterministic":
                entry.latent_sample = mean  # A1111: latent_dist.std = 0
            else:
                entry.latent_sample = self._sample(mean, std)
            if use_weight:
                channels, lh, lw = mean.shape
                if alpha is not None:
                    # A1111 passes (h, w) where PIL wants (w, h), which scrambles non-square weights; (w, h) here
                    w = torch.from_numpy(np.array(alpha.resize((lw, lh))).astype(np.float32)).expand(channels, lh, lw)
                    w = w - w.min()
                    w = w / w.mean() if w.mean() > 0 else torch.ones_like(w)
                    entry.weight = w.contiguous()
                else:  # A1111: ones, so that batches with and without alpha stack
                    entry.weight = torch.ones(mean.shape)
            if not (tag_drop_out != 0 or shuffle_tags):
                entry.cond_text = self.create_text(entry.filename_text)
            groups[image.size].append(len(self.dataset))
            self.dataset.append(entry)
        if not self.dataset:
            raise ValueError("No images have been found in the dataset.")
        self.groups = list(groups.values())
        self.batch_size = min(batch_size, len(self.dataset))
        self.gradient_step = min(gradient_step, len(self.dataset) // self.batch_size)
        self.latent_sampling_method = latent_sampling_method

    def _sample(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        return mean + std * torch.randn(mean.shape, generator=self.generator)

    def create_text(self, filename_text: str) -> str:
        """A1111 ``create_text``: a random template line, tags dropped and shuffled, then [filewords] and [name]."""
        text = self.rng.choice(self.lines)
        tags = filename_text.split(",")
        if self.tag_drop_out != 0:
            tags = [t for t in tags if self.rng.random() > self.tag_drop_out]
        if self.shuffle_tags:
            self.rng.shuffle(tags)
        text = text.replace("[filewords]", ",".join(tags))
        return text.replace("[name]", self.placeholder_token)

    def __len__(self) -> int:
        return len(self.dataset)

    def _item(self, i: int) -> DatasetEntry:
        entry = self.dataset[i]
        if self.tag_drop_out != 0 or self.shuffle_tags:
            entry.cond_text = self.create_text(entry.filename_text)
        if self.latent_sampling_method == "random":
            entry.latent_sample = self._sample(entry.latent_mean, entry.latent_std)
        return entry

    def batches(self) -> Any:
        """One epoch of batches (A1111 ``GroupedBatchSampler`` + ``collate_wrapper``)."""
        b = self.batch_size
        n = len(self.dataset)
        n_batch = n // b
        expected = [len(g) / n * n_batch * b for g in self.groups]
        base = sum(int(e) // b for e in expected)
        n_rand = n_batch - base
        probs = [e % b / n_rand / b if n_rand > 0 else 0 for e in expected]
        order: list[list[int]] = []
        for g in self.groups:
            self.rng.shuffle(g)
            order.extend(g[i * b:(i + 1) * b] for i in range(len(g) // b))
        for _ in range(n_rand):
            group = self.rng.choices(self.groups, probs)[0]
            order.append(self.rng.choices(group, k=b))
        self.rng.shuffle(order)
        for ids in order:
            entries = [self._item(i) for i in ids]
            weights = [e.weight for e in entries]
            yield Batch(
                cond_text=[e.cond_text for e in entries],
                latent_sample=torch.stack([e.latent_sample for e in entries]),
                weight=torch.stack(weights) if all(w is not None for w in weights) else None,
                filename=[e.filename for e in entries],
            )
