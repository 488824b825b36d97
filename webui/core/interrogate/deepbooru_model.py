"""The TorchDeepDanbooru network ("ResNet custom v3"), the model A1111 v1.10.1 tags images with
(``modules/deepbooru_model.py``, class ``DeepDanbooruModel``; weights ``model-resnet_custom_v3.pt`` from
https://github.com/AUTOMATIC1111/TorchDeepDanbooru/releases).

A1111's class is generated code: one line per layer (``n_Conv_0`` .. ``n_Conv_178``, ``n_MaxPool_0``) and one per
tensor operation in ``forward``. This module builds the same network from a short description instead -- six stages
of bottleneck residual blocks -- so that:

- the parameter names, shapes and the order of the layers are A1111's, and the released file loads with strict key
  checking (``n_Conv_<i>.weight`` / ``.bias``; the last conv has no bias; the saved dict also holds ``tags``);
- the forward pass computes what A1111's does: NHWC input in 0..1 permuted to NCHW, the stem conv on a zero pad of
  (2, 3) (TensorFlow's "same" padding, the model was converted from Keras), max-pooling on a -inf pad of (0, 1),
  3x3 convs padded (1, 1), or (0, 1) when they stride 2, relu after each conv and after each residual sum,
  a 1x1 conv to the tag logits, global average pooling and a sigmoid;
- the channel widths are parameters (:class:`Widths`), read from a state dict's shapes when loading, so a test can
  build a narrow random network with the same names and the same forward code path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One stage of bottleneck blocks. Its first block projects the shortcut with a strided 1x1 conv; the others add
    their input back unchanged.

    ``shortcut_last``: the projection conv is numbered after the block's three convs (A1111's ``n_Conv_100`` follows
    97-99) rather than before them (``n_Conv_1`` before 2-4): the numbering follows the converted Keras graph."""

    blocks: int
    stride: int
    shortcut_last: bool = False


#: The architecture: the block count, stride and layer order of each stage. Only the widths vary (:class:`Widths`).
STAGES: tuple[Stage, ...] = (
    Stage(3, 1),
    Stage(8, 2),
    Stage(20, 2),
    Stage(20, 2, shortcut_last=True),
    Stage(3, 2),
    Stage(3, 2),
)


@dataclass(frozen=True)
class Widths:
    """Channel counts: the stem's, each stage's (bottleneck, output), and the number of tags."""

    stem: int = 64
    stages: tuple[tuple[int, int], ...] = ((64, 256), (128, 512), (256, 1024), (256, 1024), (512, 2048), (1024, 4096))
    tags: int = 9176

    def __post_init__(self) -> None:
        if len(self.stages) != len(STAGES):
            raise ValueError(f"expected {len(STAGES)} stage widths, got {len(self.stages)}")

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any]) -> Widths:
        """The widths a state dict's tensors were made for, read from the shapes of the stem, of each stage's first
        3x3 conv and projection conv, and of the last conv. Raises ValueError when one of those keys is missing or is
        not a 4-d conv weight (then the file is not a TorchDeepDanbooru model)."""
        plan = _plan()

        def shape(index: int) -> tuple[int, ...]:
            key = f"n_Conv_{index}.weight"
            value = state_dict.get(key)
            if not isinstance(value, torch.Tensor) or value.dim() != 4:
                raise ValueError(f"no 4-d tensor {key!r}")
            return tuple(value.shape)

        stages = []
        for stage_index in range(len(STAGES)):
            first = next(b for b in plan.blocks if b.stage == stage_index)
            stages.append((shape(first.conv3)[0], shape(first.shortcut)[0]))
        return cls(stem=shape(0)[0], stages=tuple(stages), tags=shape(plan.head)[0])


@dataclass(frozen=True)
class _Block:
    stage: int
    reduce: int  # 1x1 conv: in -> bottleneck
    conv3: int  # 3x3 conv: bottleneck -> bottleneck, strided in a stage's first block
    expand: int  # 1x1 conv: bottleneck -> out
    shortcut: int | None  # 1x1 projection conv (a stage's first block), else the input is added back as it is
    stride: int


@dataclass(frozen=True)
class _Plan:
    blocks: tuple[_Block, ...]
    head: int  # the index of the last conv (features -> tag logits)


def _plan() -> _Plan:
    """Number the convs as A1111's file does: ``n_Conv_0`` is the stem, then each block's convs in order (the
    projection first, or last in a ``shortcut_last`` stage), then the head."""
    index = 1
    blocks = []
    for stage_index, stage in enumerate(STAGES):
        for block_index in range(stage.blocks):
            first = block_index == 0
            if first and not stage.shortcut_last:
                shortcut, index = index, index + 1
            reduce, conv3, expand = index, index + 1, index + 2
            index += 3
            if first and stage.shortcut_last:
                shortcut, index = index, index + 1
            blocks.append(_Block(stage_index, reduce, conv3, expand, shortcut if first else None,
                                 stage.stride if first else 1))
    return _Plan(tuple(blocks), head=index)


class DeepDanbooruModel(nn.Module):
    """TorchDeepDanbooru: ``model(x)`` with ``x`` a (batch, height, width, 3) tensor of RGB values in 0..1 (A1111
    feeds 512x512) returns (batch, tags) probabilities. ``tags`` lists the tag names in output order; it is filled by
    :meth:`load_state_dict` from the ``tags`` entry of the saved dict, as A1111's class does.

    ``device`` is passed to the layers when they are made: ``"meta"`` builds a network without memory or random
    initialisation, for loading with ``assign=True`` or for looking at its shapes."""

    def __init__(self, widths: Widths | None = None, *, device: Any = None):
        super().__init__()
        self.widths = widths = widths or Widths()
        self.tags: list[str] = []
        self._plan = plan = _plan()

        def conv(index: int, in_ch: int, out_ch: int, kernel: int, stride: int = 1, bias: bool = True) -> None:
            setattr(self, f"n_Conv_{index}", nn.Conv2d(in_ch, out_ch, kernel, stride=stride, bias=bias, device=device))

        conv(0, 3, widths.stem, 7, stride=2)
        self.n_MaxPool_0 = nn.MaxPool2d(kernel_size=3, stride=2)
        channels = widths.stem
        for block in plan.blocks:
            mid, out = widths.stages[block.stage]
            if block.shortcut is not None:
                conv(block.shortcut, channels, out, 1, stride=block.stride)
            conv(block.reduce, channels, mid, 1)
            conv(block.conv3, mid, mid, 3, stride=block.stride)
            conv(block.expand, mid, out, 1)
            channels = out
        conv(plan.head, channels, widths.tags, 1, bias=False)

    def _conv(self, index: int) -> nn.Conv2d:
        return getattr(self, f"n_Conv_{index}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        x = F.relu(self.n_Conv_0(F.pad(x, [2, 3, 2, 3], value=0.0)))
        x = self.n_MaxPool_0(F.pad(x, [0, 1, 0, 1], value=float("-inf")))
        for block in self._plan.blocks:
            shortcut = x if block.shortcut is None else self._conv(block.shortcut)(x)
            h = F.relu(self._conv(block.reduce)(x))
            # a strided 3x3 conv pads only the right and bottom: TensorFlow's "same" padding of the original model
            h = F.pad(h, [0, 1, 0, 1] if block.stride == 2 else [1, 1, 1, 1], value=0.0)
            h = F.relu(self._conv(block.conv3)(h))
            x = F.relu(self._conv(block.expand)(h) + shortcut)
        x = self._conv(self._plan.head)(x)
        x = F.avg_pool2d(x, kernel_size=x.shape[-2:])
        return torch.sigmoid(x.flatten(1))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load the file's dict: its ``tags`` entry becomes :attr:`tags`, the tensors the weights (strictly by
        default: every key must be there with its shape)."""
        self.tags = list(state_dict.get("tags", []))
        tensors = {k: v for k, v in state_dict.items() if k != "tags"}
        return super().load_state_dict(tensors, strict=strict, assign=assign)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any]) -> DeepDanbooruModel:
        """A model with the widths of ``state_dict``, holding its tensors (assigned, not copied) and its tags.

        Raises ValueError when the dict is not a TorchDeepDanbooru model: a key missing, unexpected or of the wrong
        shape, or no list of tag names."""
        widths = Widths.from_state_dict(state_dict)
        model = cls(widths, device="meta")
        problems = _mismatches(model.state_dict(), {k: v for k, v in state_dict.items() if k != "tags"})
        if problems:
            raise ValueError(problems)
        model.load_state_dict(state_dict, strict=True, assign=True)
        tags = model.tags
        if not tags or not all(isinstance(t, str) for t in tags):
            raise ValueError("no 'tags' entry listing the tag names")
        if len(tags) != widths.tags:
            # A1111 pairs names and outputs with zip() and says nothing; the released file has one name per output
            log.warning("DeepDanbooru: %d tag names for %d outputs; the extra ones are ignored",
                        len(tags), widths.tags)
        return model


def _mismatches(expected: Mapping[str, torch.Tensor], got: Mapping[str, Any], shown: int = 3) -> str:
    """What keeps ``got`` from loading into a model whose state dict is ``expected``, in one line naming the first
    few keys of each kind ("" when it loads). torch's own message lists every key, one per line."""

    def some(items: list[str]) -> str:
        more = f" and {len(items) - shown} more" if len(items) > shown else ""
        return ", ".join(items[:shown]) + more

    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [f"{k} {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__} "
             f"(expected {tuple(expected[k].shape)})"
             for k, v in got.items()
             if k in expected and not (isinstance(v, torch.Tensor) and v.shape == expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing {some(missing)}")
    if unexpected:
        parts.append(f"unexpected {some(unexpected)}")
    if wrong:
        parts.append(f"wrong shape: {some(wrong)}")
    return "; ".join(parts)
