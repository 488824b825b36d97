"""Prompts -> text-encoder conditioning, as A1111's sd_hijack_clip / sd_hijack_open_clip / sd_models_xl /
prompt_parser (get_learned_conditioning, reconstruct_*_batch) do it.

- Token chunks of 75 (+BOS/EOS = 77), padded with the end token; OpenCLIP models then overwrite everything after the
  first end token with their pad id 0 (A1111 ``process_tokens``). Long prompts become several chunks whose outputs
  are concatenated; the break moves back to the last comma within ``comma_padding_backtrack`` (20) tokens; ``BREAK``
  starts a new chunk.
- Texts encoded together (one prompt's schedule) with fewer chunks get empty chunks so the batch is rectangular.
- Emphasis: ``(x)``, ``[x]``, ``(x:1.3)`` multipliers per token, then the emphasis mode: "Original" restores the mean,
  "No norm" does not, "Ignore" drops the multipliers, "None" does not parse the syntax at all (sd_emphasis.py).
- Textual-inversion embeddings found in the token stream take the places of their tokens (EmbeddingsWithFixes).
- Clip skip (``CLIP_stop_at_last_layers``) on SD1: hidden state -n followed by the final layer norm; SDXL's CLIP-L only
  with option ``sdxl_clip_l_skip``. SD2: OpenCLIP-H penultimate layer + final layer norm.
- SDXL: CLIP-L hidden state of layer 11 (penultimate) and OpenCLIP-bigG penultimate, concatenated; pooled vector
  from bigG's projection of the first chunk; size/crop conditioning; an all-empty negative prompt is zeroed.
- Prompt editing and alternation become a schedule per prompt (``[(end_at_step, Cond), ...]``), AND-composition a
  list of weighted schedules per image; :class:`ScheduledConds` hands the CFG denoiser the rows for each step.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from pipelines.denoiser import Cond, StepConds
from webui.core.generation import prompts as prompt_parser

CHUNK = 75


@dataclass
class PromptChunk:
    tokens: list[int]
    multipliers: list[float]
    fixes: list[tuple[int, Any]] = field(default_factory=list)  # (offset in chunk, embedding): A1111 PromptChunkFix


@dataclass(frozen=True)
class EncoderOptions:
    """The options A1111 reads while encoding prompts (``opts.*``), resolved once per request."""

    clip_skip: int = 1
    emphasis: str = "Original"
    comma_padding_backtrack: int = 20
    sdxl_clip_l_skip: bool = False
    sdxl_crop_top: int = 0
    sdxl_crop_left: int = 0
    refiner_low_aesthetic_score: float = 2.5
    refiner_high_aesthetic_score: float = 6.0

    @classmethod
    def from_settings(cls, opts, clip_skip: int | None = None) -> "EncoderOptions":
        return cls(
            clip_skip=int(clip_skip if clip_skip is not None else (opts.get("CLIP_stop_at_last_layers") or 1)),
            emphasis=str(opts.get("emphasis") or "Original"),
            comma_padding_backtrack=int(opts.get("comma_padding_backtrack")),
            sdxl_clip_l_skip=bool(opts.get("sdxl_clip_l_skip")),
            sdxl_crop_top=int(opts.get("sdxl_crop_top")),
            sdxl_crop_left=int(opts.get("sdxl_crop_left")),
            refiner_low_aesthetic_score=float(opts.get("sdxl_refiner_low_aesthetic_score")),
            refiner_high_aesthetic_score=float(opts.get("sdxl_refiner_high_aesthetic_score")),
        )


@dataclass
class EncodeReport:
    """What encoding noticed, for the infotext (A1111's hijack.extra_generation_params): the embeddings used and
    whether a non-default emphasis mode met emphasis syntax."""

    used_embeddings: dict[str, Any] = field(default_factory=dict)
    emphasis: str | None = None

    def infotext_params(self, add_ti_hashes: bool = True) -> dict[str, str]:
        """``TI hashes`` ("name: hash, ...", A1111 strips ':' and ',' from names) and ``Emphasis``."""
        out: dict[str, str] = {}
        if add_ti_hashes and self.used_embeddings:
            hashes = []
            for name, emb in self.used_embeddings.items():
                shorthash = getattr(emb, "shorthash", None)
                if shorthash:
                    hashes.append(f"{name.replace(':', '').replace(',', '')}: {shorthash}")
            if hashes:
                out["TI hashes"] = ", ".join(hashes)
        if self.emphasis:
            out["Emphasis"] = self.emphasis
        return out


def tokenize_chunks(
    tokenizer,
    text_parts: list[tuple[str, float]],
    comma_padding_backtrack: int = 20,
    find_embedding: Callable[[list[int], int], tuple[Any, int]] | None = None,
) -> list[PromptChunk]:
    """A1111 ``FrozenCLIPEmbedderWithCustomWords.tokenize_line`` for already-parsed (text, weight) parts.

    A part ``("BREAK", -1)`` forces a new chunk. ``find_embedding(tokens, position)`` returns the textual-inversion
    embedding starting at ``position`` and how many prompt tokens its name takes, or ``(None, 0)``.
    """
    id_start, id_end = tokenizer.bos_token_id, tokenizer.eos_token_id
    comma_token = tokenizer.get_vocab().get(",</w>")
    chunks: list[PromptChunk] = []
    chunk = PromptChunk([], [])
    last_comma = -1

    def next_chunk():
        nonlocal chunk, last_comma
        to_add = CHUNK - len(chunk.tokens)
        if to_add > 0:
            chunk.tokens += [id_end] * to_add
            chunk.multipliers += [1.0] * to_add
        chunk.tokens = [id_start] + chunk.tokens + [id_end]
        chunk.multipliers = [1.0] + chunk.multipliers + [1.0]
        last_comma = -1
        chunks.append(chunk)
        chunk = PromptChunk([], [])

    texts = [t for t, _ in text_parts]
    tokenized = tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"] if texts else []
    for tokens, (text, weight) in zip(tokenized, text_parts):
        if text == "BREAK" and weight == -1:
            next_chunk()
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == comma_token:
                last_comma = len(chunk.tokens)
            elif (
                comma_padding_backtrack != 0
                and len(chunk.tokens) == CHUNK
                and last_comma != -1
                and len(chunk.tokens) - last_comma <= comma_padding_backtrack
            ):
                break_at = last_comma + 1
                reloc_tokens, reloc_mults = chunk.tokens[break_at:], chunk.multipliers[break_at:]
                chunk.tokens, chunk.multipliers = chunk.tokens[:break_at], chunk.multipliers[:break_at]
                next_chunk()
                chunk.tokens, chunk.multipliers = reloc_tokens, reloc_mults
            if len(chunk.tokens) == CHUNK:
                next_chunk()
            embedding, length_in_tokens = find_embedding(tokens, position) if find_embedding else (None, 0)
            if embedding is None:
                chunk.tokens.append(token)
                chunk.multipliers.append(weight)
                position += 1
                continue
            emb_len = int(embedding.vectors)
            if len(chunk.tokens) + emb_len > CHUNK:
                next_chunk()
            chunk.fixes.append((len(chunk.tokens), embedding))
            chunk.tokens += [0] * emb_len
            chunk.multipliers += [weight] * emb_len
            position += length_in_tokens
    if chunk.tokens or not chunks:
        next_chunk()
    return chunks


def _empty_chunk(tokenizer) -> PromptChunk:
    return PromptChunk([tokenizer.bos_token_id] + [tokenizer.eos_token_id] * (CHUNK + 1), [1.0] * (CHUNK + 2))


@contextmanager
def _token_embedding_fixes(encoder, fixes: list[list[tuple[int, Any]]], kind: str):
    """Put textual-inversion vectors in place of their placeholder tokens for one encoder call (A1111's
    EmbeddingsWithFixes): a forward hook on the encoder's token-embedding module, removed on exit. A hook on our own
    module instance, not a patched class, keeps the change scoped to this call."""
    if not any(fixes):
        yield
        return
    from webui.core.networks.embeddings import substitute_embeddings

    def hook(_module, _inputs, output):
        return substitute_embeddings(output, fixes, kind)

    handle = encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class TextEncoderRunner:
    """Encodes token chunks with one text encoder in the way A1111 uses that encoder."""

    def __init__(self, encoder, tokenizer, kind: str, options: EncoderOptions, report: EncodeReport | None = None):
        self.encoder, self.tokenizer, self.kind, self.options = encoder, tokenizer, kind, options
        self.report = report if report is not None else EncodeReport()
        # SD1 and CLIP-L pad with the end token; OpenCLIP models pad with id 0 after the first end token.
        self.id_pad = tokenizer.eos_token_id if kind in ("sd1", "sdxl_l") else 0

    def _final_norm(self, z: torch.Tensor) -> torch.Tensor:
        # transformers < 5 nests the layers under .text_model; 5 keeps them on the model itself
        return getattr(self.encoder, "text_model", self.encoder).final_layer_norm(z)

    def tokenize_line(self, line: str, embeddings=None) -> list[PromptChunk]:
        if self.options.emphasis != "None":
            parsed = [(t, w) for t, w in prompt_parser.parse_prompt_attention(line)]
        else:
            parsed = [(line, 1.0)]
        find = None
        if embeddings is not None:
            find = lambda tokens, pos: embeddings.find_embedding_at_position(tokens, pos, self.tokenizer)  # noqa: E731
        return tokenize_chunks(self.tokenizer, parsed, self.options.comma_padding_backtrack, find)

    def encode_tokens(self, batch_tokens: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = self.encoder.device
        tokens = torch.asarray(batch_tokens, device=device)
        if self.id_pad != self.tokenizer.eos_token_id:
            for i, row in enumerate(batch_tokens):
                first_end = row.index(self.tokenizer.eos_token_id)
                tokens[i, first_end + 1 :] = self.id_pad
        out = self.encoder(input_ids=tokens, output_hidden_states=True)
        pooled = None
        clip_skip = self.options.clip_skip
        depth = len(out.hidden_states)  # the embeddings' output, then one entry per layer
        if clip_skip > depth and (self.kind == "sd1" or self.kind == "sdxl_l" and self.options.sdxl_clip_l_skip):
            # A1111 fails with an IndexError (500): hidden_states[-clip_skip] does not exist for this encoder
            from webui.core.generation.context import GenerationError

            raise GenerationError(f"clip_skip {clip_skip} is more than this model's text encoder has layers for "
                                  f"(CLIP_stop_at_last_layers / clip_skip: 1 to {depth})", "clip_skip")
        if self.kind == "sd1":
            if clip_skip > 1:
                z = self._final_norm(out.hidden_states[-clip_skip])
            else:
                z = out.last_hidden_state
        elif self.kind == "sd2":
            z = self._final_norm(out.hidden_states[-2])
        elif self.kind == "sdxl_l":
            # sd_models_xl: layer "hidden", layer_idx 11 (= -2 of 12); opts.sdxl_clip_l_skip uses the clip skip value
            z = out.hidden_states[-clip_skip] if self.options.sdxl_clip_l_skip else out.hidden_states[-2]
        else:  # sdxl_g: penultimate without final norm; pooled = projection of the normed end token
            z = out.hidden_states[-2]
            pooled = out.text_embeds
        return z, pooled

    def _emphasis(self, z: torch.Tensor, batch: list[PromptChunk]) -> torch.Tensor:
        """sd_emphasis: Original (restore the mean), No norm, Ignore/None (no multipliers)."""
        mode = self.options.emphasis
        if mode in ("None", "Ignore") or all(m == 1.0 for ch in batch for m in ch.multipliers):
            # with every weight 1 the multiplication is the identity (and "Original" would be 0/0 on a zero mean)
            return z
        # A1111 makes the multipliers with torch.asarray of Python floats: float32, whatever the encoder's dtype, so
        # under fp16 the product is promoted to float32 (and the UNet call casts it back); the original mean is taken
        # in the encoder's dtype, the new one in float32. Multipliers in fp16 (1.3 -> 1.2998) and an fp16 ratio moved
        # every emphasised prompt away from A1111's pixels on GPUs.
        mults = torch.asarray([ch.multipliers for ch in batch], device=z.device, dtype=torch.float32)
        if mode == "No norm":
            return z * mults.reshape(mults.shape + (1,)).expand(z.shape)
        original_mean = z.mean()
        z = z * mults.reshape(mults.shape + (1,)).expand(z.shape)
        return z * (original_mean / z.mean())

    def __call__(self, chunked: list[list[PromptChunk]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        n_chunks = max(len(c) for c in chunked)
        zs, pooled = [], None
        for i in range(n_chunks):
            batch = [c[i] if i < len(c) else _empty_chunk(self.tokenizer) for c in chunked]
            fixes = [ch.fixes for ch in batch]
            for row in fixes:
                for _, emb in row:
                    self.report.used_embeddings[emb.name] = emb
            with _token_embedding_fixes(self.encoder, fixes, self.kind):
                z, p = self.encode_tokens([ch.tokens for ch in batch])
            zs.append(self._emphasis(z, batch))
            if i == 0:
                pooled = p
        return torch.hstack(zs), pooled


class PromptEncoder:
    """``model.get_learned_conditioning(texts)`` for one loaded model: a batch of prompt texts -> one :class:`Cond`
    (batch = len(texts)), with the request's options, embeddings and SDXL size conditioning."""

    def __init__(self, components, options: EncoderOptions, *, width: int, height: int, embeddings=None):
        self.components = components
        self.options = options
        self.width, self.height = width, height
        self.embeddings = embeddings
        self.report = EncodeReport()

    def _run(self, encoder, tokenizer, kind: str, texts: list[str]):
        runner = TextEncoderRunner(encoder, tokenizer, kind, self.options, self.report)
        cache: dict[str, list[PromptChunk]] = {}
        chunked = []
        for text in texts:
            if text not in cache:
                cache[text] = runner.tokenize_line(text, self.embeddings)
            chunked.append(cache[text])
        return runner(chunked)

    @torch.no_grad()
    def __call__(self, texts: list[str], is_negative: bool = False) -> Cond:
        return self.encode(texts, is_negative)

    def encode(self, texts: list[str], is_negative: bool = False) -> Cond:
        """:meth:`__call__` with autograd left as the caller has it: textual-inversion training needs the gradient
        of the conditioning with respect to the embedding's vectors (A1111 calls its cond_stage_model directly)."""
        comp, opts = self.components, self.options
        if opts.emphasis != "Original" and any("(" in t or "[" in t for t in texts):
            self.report.emphasis = opts.emphasis
        arch = comp.arch
        if arch == "SD1":
            context, _ = self._run(comp.text_encoder, comp.tokenizer, "sd1", texts)
            return Cond(context)
        if arch == "SD2":
            context, _ = self._run(comp.text_encoder, comp.tokenizer, "sd2", texts)
            return Cond(context)
        ctx_g, pooled = self._run(comp.text_encoder_2, comp.tokenizer_2, "sdxl_g", texts)
        height, width = self.height, self.width
        if arch == "SDXL":
            ctx_l, _ = self._run(comp.text_encoder, comp.tokenizer, "sdxl_l", texts)
            if ctx_l.shape[1] != ctx_g.shape[1]:  # both tokenizers chunk the same text identically
                raise RuntimeError("SDXL text encoders produced different chunk counts")
            context = torch.cat([ctx_l, ctx_g], dim=-1)
            time_ids = [height, width, opts.sdxl_crop_top, opts.sdxl_crop_left, height, width]
        else:  # refiner: bigG only, aesthetic score instead of the target size
            context = ctx_g
            score = opts.refiner_low_aesthetic_score if is_negative else opts.refiner_high_aesthetic_score
            time_ids = [height, width, opts.sdxl_crop_top, opts.sdxl_crop_left, score]
        if is_negative and all(t == "" for t in texts):
            # sgm's force_zero_embeddings for an empty negative prompt: text outputs zeroed, size vector kept
            context = torch.zeros_like(context)
            pooled = torch.zeros_like(pooled)
        ids = torch.tensor([time_ids] * len(texts), device=context.device, dtype=context.dtype)
        return Cond(context, {"text_embeds": pooled, "time_ids": ids})


# ---------------------------------------------------------------------------------------------------------------
# Schedules (prompt editing, alternation) and composition (AND): A1111 prompt_parser's conditioning half.


@dataclass(frozen=True)
class ScheduledCond:
    """A1111 ScheduledPromptConditioning: ``cond`` (a batch of one) is used while step <= ``end_at_step``."""

    end_at_step: int
    cond: Cond


@dataclass(frozen=True)
class SchedulingOptions:
    steps: int
    hires_steps: int | None = None
    use_old_scheduling: bool = False


def get_learned_conditioning(
    encoder: PromptEncoder, prompts: list[str], sched: SchedulingOptions, *, is_negative: bool = False
) -> list[list[ScheduledCond]]:
    """A1111 prompt_parser.get_learned_conditioning: each prompt's schedule texts are encoded together (so they share
    one chunk count); equal prompts share one result."""
    schedules = prompt_parser.get_learned_conditioning_prompt_schedules(
        prompts, sched.steps, sched.hires_steps, sched.use_old_scheduling
    )
    cache: dict[str, list[ScheduledCond]] = {}
    res = []
    for prompt, schedule in zip(prompts, schedules):
        if prompt not in cache:
            texts = [text for _, text in schedule]
            conds = encoder(texts, is_negative=is_negative)
            cache[prompt] = [ScheduledCond(end, conds.rows(i)) for i, (end, _) in enumerate(schedule)]
        res.append(cache[prompt])
    return res


@dataclass(frozen=True)
class MulticondConditioning:
    """A1111 MulticondLearnedConditioning: per image, its AND-parts as (schedule, weight)."""

    batch: list[list[tuple[list[ScheduledCond], float]]]


def get_multicond_learned_conditioning(
    encoder: PromptEncoder, prompts: list[str], sched: SchedulingOptions
) -> MulticondConditioning:
    """A1111 get_multicond_learned_conditioning: split on AND (with ``:weight``), encode every distinct part."""
    res_indexes, flat, _ = prompt_parser.get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(encoder, flat, sched)
    return MulticondConditioning([[(learned[i], float(weight)) for i, weight in indexes] for indexes in res_indexes])


def _pick(schedule: list[ScheduledCond], step: int) -> int:
    for index, entry in enumerate(schedule):
        if step <= entry.end_at_step:
            return index
    return 0  # A1111 keeps target_index 0 when no entry matches


def _stack(conds: list[Cond]) -> Cond:
    tokens = max(c.context.shape[1] for c in conds)
    return Cond.cat([c.padded_to(tokens) for c in conds])


class ScheduledConds(StepConds):
    """The per-step view the CFG denoiser reads (A1111 reconstruct_multicond_batch / reconstruct_cond_batch).

    Rebuilt only when a schedule switches to its next entry, so a prompt without editing costs one stack per
    request, not one per step."""

    def __init__(self, cond: MulticondConditioning, uncond: list[list[ScheduledCond]]):
        self.cond, self.uncond = cond, uncond
        self._key: tuple | None = None
        self._value: tuple | None = None

    def at(self, step: int):
        picks = tuple(_pick(schedule, step) for parts in self.cond.batch for schedule, _ in parts)
        upicks = tuple(_pick(schedule, step) for schedule in self.uncond)
        key = (picks, upicks)
        if key != self._key:
            tensors, conds_list, k = [], [], 0
            for parts in self.cond.batch:
                row = []
                for schedule, weight in parts:
                    row.append((len(tensors), weight))
                    tensors.append(schedule[picks[k]].cond)
                    k += 1
                conds_list.append(row)
            uncond = _stack([schedule[i].cond for schedule, i in zip(self.uncond, upicks)])
            self._key, self._value = key, (conds_list, _stack(tensors), uncond)
        return self._value

    def change_steps(self) -> list[int]:
        """The steps at which some schedule switches (for tests and logging)."""
        ends = {e.end_at_step for parts in self.cond.batch for s, _ in parts for e in s[:-1]}
        ends |= {e.end_at_step for s in self.uncond for e in s[:-1]}
        return sorted(ends)


def encode_prompts(components, prompts: list[str], *, is_negative: bool = False, width: int = 1024,
                   height: int = 1024, options: EncoderOptions | None = None, embeddings=None) -> Cond:
    """Conditioning for a batch of plain prompt texts (emphasis and BREAK apply; no schedules): a convenience for
    callers that need one Cond, such as tests and the benchmark."""
    encoder = PromptEncoder(components, options or EncoderOptions(), width=width, height=height, embeddings=embeddings)
    return encoder(prompts, is_negative=is_negative)
