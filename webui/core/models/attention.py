"""Cross-attention optimizations (A1111 ``sd_hijack_optimizations``) as diffusers attention processors, chosen per
request by option ``cross_attention_optimization`` and the launch flags, set on the model's UNet and VAE for that
request and put back after it (house rule 3: A1111 swaps class methods for good; here each module gets back the very
processor object it had).

A1111's optimizations and what runs here:

=====================================================================  ============================================
A1111 (title, flag)                                                    here
=====================================================================  ============================================
xformers (``--xformers``)                                              diffusers ``XFormersAttnProcessor``
sdp-no-mem - scaled dot product without memory efficient attention     ``AttnProcessor2_0`` with the memory-efficient
(``--opt-sdp-no-mem-attention``)                                       SDPA kernel turned off (flash + math only)
sdp - scaled dot product (``--opt-sdp-attention``)                     ``AttnProcessor2_0`` (diffusers' default)
sub-quadratic (``--opt-sub-quad-attention``, ``--sub-quad-*``)         :class:`SubQuadraticAttnProcessor` (below)
V1 - original v1 (``--opt-split-attention-v1``)                        ``SlicedAttnProcessor(2)``: A1111's V1 runs
                                                                       the batch x heads rows two at a time
InvokeAI (``--opt-split-attention-invokeai``)                          ``SlicedAttnProcessor`` sized by A1111's
                                                                       rule (32 MB score slices off CUDA)
Doggettx (``--opt-split-attention``)                                   ``SlicedAttnProcessor`` sized by A1111's
                                                                       free-memory rule
None                                                                   ``AttnProcessor`` (the plain LDM maths)
=====================================================================  ============================================

The sliced ones slice batch x heads (diffusers' axis) where A1111's Doggettx/InvokeAI may slice query tokens: the
same maths and the same memory bound per slice, a different loop. "Automatic" takes the optimization whose flag was
given (A1111's priority order), else "sdp" -- A1111's Automatic would pick Doggettx on CUDA and InvokeAI on CPU, but
SDPA is diffusers' default and what every image here has been made with, so a server without flags keeps its bytes.
``upcast_attn`` runs the attention maths in float32 whatever the model's dtype (A1111's ``q, k, v = q.float() ...``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

AUTOMATIC, NONE = "Automatic", "None"


# --------------------------------------------------------------------------------------------------------------------
# sub-quadratic attention
# --------------------------------------------------------------------------------------------------------------------
# Written here because no maintained library ships it: diffusers dropped it, and the PyPI package it comes from
# (memory-efficient-attention 0.1.3, 2022) imports jax on import and lacks what A1111 added (the chunk threshold's
# unchunked fast path, kv_chunk_size_min). The algorithm is Rabe & Staats' "Self-attention does not need O(n^2)
# memory" as A1111's modules/sub_quadratic_attention.py runs it (Amin Rezaei's chunking, Birch-san's changes).


def _attention_no_kv_chunking(q, k, v, scale):
    scores = torch.baddbmm(torch.zeros(1, 1, 1, device=q.device, dtype=q.dtype), q, k.transpose(1, 2),
                           alpha=scale, beta=0)
    return torch.bmm(scores.softmax(dim=-1).to(v.dtype), v)


def _query_chunk_attention(q, k, v, scale, kv_chunk_size):
    """Attention of a query chunk over key/value chunks, combined with the running-max trick."""
    values, weights, maxes = [], [], []
    for start in range(0, k.shape[1], kv_chunk_size):
        kc, vc = k[:, start:start + kv_chunk_size], v[:, start:start + kv_chunk_size]
        scores = torch.baddbmm(torch.zeros(1, 1, 1, device=q.device, dtype=q.dtype), q, kc.transpose(1, 2),
                               alpha=scale, beta=0)
        max_score = torch.amax(scores, -1, keepdim=True).detach()
        exp_weights = torch.exp(scores - max_score)
        values.append(torch.bmm(exp_weights.to(vc.dtype), vc))
        weights.append(exp_weights.sum(dim=-1))
        maxes.append(max_score.squeeze(-1))
    chunk_values, chunk_weights, chunk_max = torch.stack(values), torch.stack(weights), torch.stack(maxes)
    global_max = torch.amax(chunk_max, 0, keepdim=True)
    max_diffs = torch.exp(chunk_max - global_max)
    chunk_values = chunk_values * max_diffs.unsqueeze(-1).to(chunk_values.dtype)
    chunk_weights = chunk_weights * max_diffs
    return chunk_values.sum(dim=0) / chunk_weights.unsqueeze(-1).sum(dim=0).to(chunk_values.dtype)


def efficient_dot_product_attention(q, k, v, scale: float, query_chunk_size: int = 1024,
                                    kv_chunk_size: int | None = None, kv_chunk_size_min: int | None = None):
    """softmax(q k^T * scale) v for (batch x heads, tokens, channels) tensors, in query chunks of
    ``query_chunk_size`` and key/value chunks of ``kv_chunk_size`` (default sqrt(key tokens), at least
    ``kv_chunk_size_min``); one chunk when the keys fit."""
    q_tokens, k_tokens = q.shape[1], k.shape[1]
    kv_chunk_size = min(kv_chunk_size or int(math.sqrt(k_tokens)), k_tokens)
    if kv_chunk_size_min is not None:
        kv_chunk_size = max(kv_chunk_size, kv_chunk_size_min)

    def compute(q_chunk):
        if k_tokens <= kv_chunk_size:
            return _attention_no_kv_chunking(q_chunk, k, v, scale)
        return _query_chunk_attention(q_chunk, k, v, scale, kv_chunk_size)

    if q_tokens <= query_chunk_size:
        return compute(q)
    return torch.cat([compute(q[:, i:i + query_chunk_size]) for i in range(0, q_tokens, query_chunk_size)], dim=1)


def available_memory(device: torch.device) -> int:
    """A1111 get_available_vram: CUDA free + what torch holds unused, else free RAM."""
    if device.type == "cuda":
        stats = torch.cuda.memory_stats(device)
        free_cuda, _ = torch.cuda.mem_get_info(device)
        return free_cuda + stats["reserved_bytes.all.current"] - stats["active_bytes.all.current"]
    import psutil

    return psutil.virtual_memory().available


def sub_quad_attention(q, k, v, scale: float, q_chunk_size: int = 1024, kv_chunk_size: int | None = None,
                       chunk_threshold: int | None = None, memory: Callable[[torch.device], int] = available_memory):
    """A1111 ``sub_quad_attention``: ``chunk_threshold`` (percent of free memory; None: 70 %, 0: always chunk) decides
    whether the whole q k^T fits (one kv chunk) and the smallest kv chunk worth taking."""
    bytes_per_token = torch.finfo(q.dtype).bits // 8
    batch_x_heads, q_tokens, _ = q.shape
    k_tokens = k.shape[1]
    qk_matmul_size_bytes = batch_x_heads * bytes_per_token * q_tokens * k_tokens
    if chunk_threshold is None:
        threshold_bytes = int(memory(q.device) * (0.9 if q.device.type == "mps" else 0.7))
    elif chunk_threshold == 0:
        threshold_bytes = None
    else:
        threshold_bytes = int(0.01 * chunk_threshold * memory(q.device))
    kv_chunk_size_min = None
    if threshold_bytes is not None:
        kv_chunk_size_min = threshold_bytes // (batch_x_heads * bytes_per_token * (k.shape[2] + v.shape[2]))
        if qk_matmul_size_bytes <= threshold_bytes:
            kv_chunk_size = k_tokens  # the whole matmul fits: A1111's unchunked fast path
    return efficient_dot_product_attention(q, k, v, scale, query_chunk_size=q_chunk_size,
                                           kv_chunk_size=kv_chunk_size, kv_chunk_size_min=kv_chunk_size_min)


class SubQuadraticAttnProcessor:
    """diffusers attention processor running :func:`sub_quad_attention` (A1111 sub_quad_attention_forward); with an
    attention mask (SD never passes one) it runs SDPA instead, as A1111 refuses masks here."""

    def __init__(self, q_chunk_size: int = 1024, kv_chunk_size: int | None = None,
                 chunk_threshold: int | None = None):
        self.q_chunk_size = q_chunk_size
        self.kv_chunk_size = kv_chunk_size
        self.chunk_threshold = chunk_threshold

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        if attention_mask is not None:
            from diffusers.models.attention_processor import AttnProcessor2_0

            return AttnProcessor2_0()(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        q, k, v = (attn.head_to_batch_dim(t).contiguous() for t in (query, key, value))
        out = sub_quad_attention(q, k, v, attn.scale, self.q_chunk_size, self.kv_chunk_size, self.chunk_threshold)
        hidden_states = attn.batch_to_head_dim(out.to(query.dtype))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


# --------------------------------------------------------------------------------------------------------------------
# the other processors: diffusers' own, and thin wrappers around them
# --------------------------------------------------------------------------------------------------------------------


class SdpNoMemAttnProcessor:
    """A1111 scaled_dot_product_no_mem_attention_forward: SDPA with the memory-efficient kernel disabled."""

    def __init__(self):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.inner = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def invokeai_slice_rows(rows: int, q_tokens: int, k_tokens: int, element_size: int, device: torch.device,
                        memory: Callable[[torch.device], int] = available_memory) -> int:
    """A1111 einsum_op_tensor_mem's slice: the score matrix cut into pieces of at most 32 MB (CUDA: free / 3.3)."""
    max_mb = memory(device) / 3.3 / (1 << 20) if device.type == "cuda" else 32
    size_mb = rows * q_tokens * k_tokens * element_size // (1 << 20)
    if size_mb <= max_mb:
        return rows
    div = 1 << int((size_mb - 1) / max_mb).bit_length()
    return max(rows // div, 1)


def doggettx_slice_rows(rows: int, q_tokens: int, k_tokens: int, element_size: int, device: torch.device,
                        memory: Callable[[torch.device], int] = available_memory) -> int:
    """A1111 split_cross_attention_forward's steps: a power of two so that the score tensor times 2.5 (fp16: 3)
    fits the free memory; raises A1111's "Not enough memory" past 64 steps."""
    free = memory(device)
    required = rows * q_tokens * k_tokens * element_size * (3 if element_size == 2 else 2.5)
    steps = 1 if required <= free else 2 ** math.ceil(math.log(required / free, 2))
    if steps > 64:
        max_res = math.floor(math.sqrt(math.sqrt(free / 2.5)) / 8) * 64
        raise RuntimeError(f"Not enough memory, use lower resolution (max approx. {max_res}x{max_res}). "
                           f"Need: {required / 64 / 1024 ** 3:0.1f}GB free, Have:{free / 1024 ** 3:0.1f}GB free")
    return max(math.ceil(rows / steps), 1)


class MemorySlicedAttnProcessor:
    """diffusers' SlicedAttnProcessor with its slice size chosen per call by one of A1111's memory rules."""

    def __init__(self, rule: Callable[..., int]):
        self.rule = rule

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        from diffusers.models.attention_processor import SlicedAttnProcessor

        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q_tokens = hidden_states.shape[1] if hidden_states.ndim == 3 else hidden_states.shape[2] * hidden_states.shape[3]
        k_tokens = context.shape[1] if context.ndim == 3 else q_tokens
        rows = hidden_states.shape[0] * attn.heads
        size = self.rule(rows, q_tokens, k_tokens, hidden_states.element_size(), hidden_states.device)
        return SlicedAttnProcessor(size)(attn, hidden_states, encoder_hidden_states, attention_mask)


class _UpcastView:
    """The attention module as a processor sees it, with q/k/v projected then cast to float32 and the output
    projection fed back in the module's dtype: any processor's attention maths then runs in float32."""

    def __init__(self, attn):
        self._attn = attn
        dtype = attn.to_q.weight.dtype
        self.to_q = lambda x: attn.to_q(x).float()
        self.to_k = lambda x: attn.to_k(x).float()
        self.to_v = lambda x: attn.to_v(x).float()
        self.to_out = [lambda x: attn.to_out[0](x.to(dtype)), attn.to_out[1]]

    def __getattr__(self, name):
        return getattr(self._attn, name)


class UpcastAttnProcessor:
    """A1111 ``upcast_attn``: the wrapped processor's attention in float32."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        if attn.to_q.weight.dtype == torch.float32:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        return self.inner(_UpcastView(attn), hidden_states, encoder_hidden_states, attention_mask, temb)


# --------------------------------------------------------------------------------------------------------------------
# the table (A1111 list_optimizers) and the choice
# --------------------------------------------------------------------------------------------------------------------


def xformers_available() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except Exception:
        return False
    return True


@dataclass(frozen=True)
class AttentionOptions:
    """The launch flags the choice reads (A1111 cmd_opts names)."""

    xformers: bool = False
    force_enable_xformers: bool = False
    opt_sdp_no_mem_attention: bool = False
    opt_sdp_attention: bool = False
    opt_sub_quad_attention: bool = False
    opt_split_attention_v1: bool = False
    opt_split_attention_invokeai: bool = False
    opt_split_attention: bool = False
    disable_opt_split_attention: bool = False
    sub_quad_q_chunk_size: int = 1024
    sub_quad_kv_chunk_size: int | None = None
    sub_quad_chunk_threshold: int | None = None

    @classmethod
    def from_config(cls, config) -> AttentionOptions:
        values = {}
        for name, field_ in cls.__dataclass_fields__.items():
            value = config.extra(name) if config is not None else None
            values[name] = field_.default if value is None else value
        return cls(**values)


@dataclass(frozen=True)
class Optimization:
    name: str
    label: str | None
    cmd_opt: str
    priority: int
    make: Callable[[AttentionOptions], Any]
    available: Callable[[], bool] = lambda: True

    @property
    def title(self) -> str:
        return f"{self.name} - {self.label}" if self.label else self.name


def _diffusers(name: str, *args):
    def make(_opts):
        from diffusers.models import attention_processor

        return getattr(attention_processor, name)(*args)

    return make


def _sdp_available() -> bool:
    return callable(getattr(torch.nn.functional, "scaled_dot_product_attention", None))


#: A1111 list_optimizers, in its order, with its priorities off MPS (InvokeAI's 1000 is A1111's CPU priority; it only
#: matters for its flag order, see the module docstring for Automatic).
OPTIMIZATIONS: tuple[Optimization, ...] = (
    Optimization("xformers", None, "xformers", 100, _diffusers("XFormersAttnProcessor"), xformers_available),
    Optimization("sdp-no-mem", "scaled dot product without memory efficient attention", "opt_sdp_no_mem_attention",
                 80, lambda _o: SdpNoMemAttnProcessor(), _sdp_available),
    Optimization("sdp", "scaled dot product", "opt_sdp_attention", 70, _diffusers("AttnProcessor2_0"),
                 _sdp_available),
    Optimization("sub-quadratic", None, "opt_sub_quad_attention", 10,
                 lambda o: SubQuadraticAttnProcessor(o.sub_quad_q_chunk_size, o.sub_quad_kv_chunk_size,
                                                     o.sub_quad_chunk_threshold)),
    Optimization("V1", "original v1", "opt_split_attention_v1", 10, _diffusers("SlicedAttnProcessor", 2)),
    Optimization("InvokeAI", None, "opt_split_attention_invokeai", 1000,
                 lambda _o: MemorySlicedAttnProcessor(invokeai_slice_rows)),
    Optimization("Doggettx", None, "opt_split_attention", 90,
                 lambda _o: MemorySlicedAttnProcessor(doggettx_slice_rows)),
)
BY_TITLE = {o.title: o for o in OPTIMIZATIONS}
DEFAULT = BY_TITLE["sdp - scaled dot product"]
#: The option's choices, A1111's: Automatic, every optimization's title, None.
CHOICES = (AUTOMATIC, *BY_TITLE, NONE)


@dataclass(frozen=True)
class Choice:
    optimization: Optimization | None  # None: "None", the plain attention
    message: str | None = None  # why the asked one is not what runs (a fallback), for the log

    @property
    def name(self) -> str:
        return self.optimization.name if self.optimization is not None else NONE


def choose(selection: str | None, flags: AttentionOptions) -> Choice:
    """A1111 apply_optimizations: the option's value, or for Automatic the optimization whose flag was given (A1111's
    priority order) else sdp; --disable-opt-split-attention makes Automatic plain attention. An unknown value or an
    unavailable optimization falls back to sdp with a message naming both."""
    selection = selection or AUTOMATIC
    if selection == NONE:
        return Choice(None)
    if selection == AUTOMATIC:
        if flags.disable_opt_split_attention:
            return Choice(None)
        flagged = sorted((o for o in OPTIMIZATIONS if getattr(flags, o.cmd_opt, False)
                          or (o.name == "xformers" and flags.force_enable_xformers)),
                         key=lambda o: -o.priority)
        for o in flagged:
            if o.available():
                return Choice(o)
        if flagged:
            return Choice(DEFAULT, _unavailable(flagged[0]))
        return Choice(DEFAULT)
    o = BY_TITLE.get(selection) or next((x for x in OPTIMIZATIONS if x.name == selection), None)
    if o is None:
        return Choice(DEFAULT, f"cross_attention_optimization {selection!r} is not one of: {', '.join(CHOICES)}; "
                               f"using {DEFAULT.title!r}")
    if not o.available():
        return Choice(DEFAULT, _unavailable(o))
    return Choice(o)


def _unavailable(o: Optimization) -> str:
    if o.name == "xformers":
        return ("--xformers: the xformers package is not installed (pip install xformers, a build matching this "
                f"torch); using {DEFAULT.title!r}")
    return f"attention optimization {o.title!r} is not available with this torch; using {DEFAULT.title!r}"


def _attention_modules(*models) -> list:
    from diffusers.models.attention_processor import Attention

    return [m for model in models if model is not None for m in model.modules() if isinstance(m, Attention)]


@contextmanager
def use_attention(choice: Choice, flags: AttentionOptions, models, *, upcast: bool = False) -> Iterator[None]:
    """Inside the block, every attention module of ``models`` (the UNet and the VAE) runs ``choice``'s processor
    (wrapped for ``upcast``); on leaving, each gets back its own processor object. sdp without upcast is diffusers'
    default and changes nothing."""
    if choice.optimization is DEFAULT and not upcast:
        yield
        return
    if choice.optimization is None:
        from diffusers.models.attention_processor import AttnProcessor

        processor = AttnProcessor()
    else:
        processor = choice.optimization.make(flags)
    if upcast:
        processor = UpcastAttnProcessor(processor)
    modules = _attention_modules(*models)
    originals = [(m, m.processor) for m in modules]
    try:
        for m in modules:
            m.set_processor(processor)
        yield
    finally:
        for m, p in originals:
            m.set_processor(p)
