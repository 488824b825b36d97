"""Prompts -> text-encoder conditioning, as A1111's sd_hijack_clip / sd_hijack_open_clip / sd_models_xl do it.

- Token chunks of 75 (+BOS/EOS = 77), padded with the end token; OpenCLIP models then overwrite everything after the
  first end token with their pad id 0 (A1111 ``process_tokens``). Long prompts become several chunks whose outputs
  are concatenated; the break moves back to the last comma within ``comma_padding_backtrack`` (20) tokens.
- Prompts in one batch with fewer chunks get empty chunks (BOS + EOS padding) so the batch is rectangular.
- Per-token multipliers are applied and the mean restored ("Original" emphasis); with weight 1 this is exact identity.
- Clip skip (``CLIP_stop_at_last_layers``) on SD1: hidden state -n followed by the final layer norm.
- SD2: OpenCLIP-H penultimate layer + final layer norm.
- SDXL: CLIP-L hidden state of layer 11 (penultimate) and OpenCLIP-bigG penultimate, concatenated; pooled vector
  from bigG's projection of the first chunk; size/crop conditioning; an all-empty negative prompt is zeroed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipelines.denoiser import Cond

CHUNK = 75


@dataclass
class PromptChunk:
    tokens: list[int]
    multipliers: list[float]


def tokenize_chunks(
    tokenizer, text_parts: list[tuple[str, float]], comma_padding_backtrack: int = 20
) -> list[PromptChunk]:
    """A1111 ``FrozenCLIPEmbedderWithCustomWords.tokenize_line`` for already-parsed (text, weight) parts.

    A part ``("BREAK", -1)`` forces a new chunk.
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
        for token in tokens:
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
            chunk.tokens.append(token)
            chunk.multipliers.append(weight)
    if chunk.tokens or not chunks:
        next_chunk()
    return chunks


def _empty_chunk(tokenizer) -> PromptChunk:
    return PromptChunk([tokenizer.bos_token_id] + [tokenizer.eos_token_id] * (CHUNK + 1), [1.0] * (CHUNK + 2))


class TextEncoderRunner:
    """Encodes token chunks with one text encoder in the way A1111 uses that encoder."""

    def __init__(self, encoder, tokenizer, kind: str, clip_skip: int = 1):
        self.encoder, self.tokenizer, self.kind, self.clip_skip = encoder, tokenizer, kind, clip_skip
        # SD1 and CLIP-L pad with the end token; OpenCLIP models pad with id 0 after the first end token.
        self.id_pad = tokenizer.eos_token_id if kind in ("sd1", "sdxl_l") else 0

    def _final_norm(self, z: torch.Tensor) -> torch.Tensor:
        # transformers < 5 nests the layers under .text_model; 5 keeps them on the model itself
        return getattr(self.encoder, "text_model", self.encoder).final_layer_norm(z)

    def encode_tokens(self, batch_tokens: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = self.encoder.device
        tokens = torch.asarray(batch_tokens, device=device)
        if self.id_pad != self.tokenizer.eos_token_id:
            for i, row in enumerate(batch_tokens):
                first_end = row.index(self.tokenizer.eos_token_id)
                tokens[i, first_end + 1 :] = self.id_pad
        out = self.encoder(input_ids=tokens, output_hidden_states=True)
        pooled = None
        if self.kind == "sd1":
            if self.clip_skip > 1:
                z = self._final_norm(out.hidden_states[-self.clip_skip])
            else:
                z = out.last_hidden_state
        elif self.kind == "sd2":
            z = self._final_norm(out.hidden_states[-2])
        elif self.kind == "sdxl_l":
            z = out.hidden_states[-2]
        else:  # sdxl_g: penultimate without final norm; pooled = projection of the normed end token
            z = out.hidden_states[-2]
            pooled = out.text_embeds
        return z, pooled

    def __call__(self, chunked: list[list[PromptChunk]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        n_chunks = max(len(c) for c in chunked)
        zs, pooled = [], None
        for i in range(n_chunks):
            batch = [c[i] if i < len(c) else _empty_chunk(self.tokenizer) for c in chunked]
            z, p = self.encode_tokens([ch.tokens for ch in batch])
            if any(m != 1.0 for ch in batch for m in ch.multipliers):
                # "Original" emphasis: weight each token, then restore the mean. Skipped when every weight is 1,
                # where it is the identity (and would be 0/0 for a zero-mean output).
                mults = torch.asarray([ch.multipliers for ch in batch], device=z.device, dtype=z.dtype)
                original_mean = z.mean()
                z = z * mults.reshape(mults.shape + (1,)).expand(z.shape)
                z = z * (original_mean / z.mean())
            zs.append(z)
            if i == 0:
                pooled = p
        return torch.hstack(zs), pooled


def encode_prompts(
    components,
    prompts: list[str],
    *,
    clip_skip: int = 1,
    width: int = 1024,
    height: int = 1024,
    is_negative: bool = False,
    comma_padding_backtrack: int = 20,
    sdxl_crop_top: int = 0,
    sdxl_crop_left: int = 0,
    refiner_aesthetic_score: float | None = None,
) -> Cond:
    """Conditioning for a batch of prompt strings (prompt syntax beyond plain text and BREAK is issue 03)."""
    arch = components.arch
    parts = [[(p, 1.0)] if p else [] for p in prompts]
    with torch.no_grad():
        if arch == "SD1":
            runner = TextEncoderRunner(components.text_encoder, components.tokenizer, "sd1", clip_skip)
            context, _ = runner([tokenize_chunks(runner.tokenizer, p, comma_padding_backtrack) for p in parts])
            return Cond(context)
        if arch == "SD2":
            runner = TextEncoderRunner(components.text_encoder, components.tokenizer, "sd2", clip_skip)
            context, _ = runner([tokenize_chunks(runner.tokenizer, p, comma_padding_backtrack) for p in parts])
            return Cond(context)
        runner_g = TextEncoderRunner(components.text_encoder_2, components.tokenizer_2, "sdxl_g", clip_skip)
        ctx_g, pooled = runner_g([tokenize_chunks(runner_g.tokenizer, p, comma_padding_backtrack) for p in parts])
        if arch == "SDXL":
            runner_l = TextEncoderRunner(components.text_encoder, components.tokenizer, "sdxl_l", clip_skip)
            ctx_l, _ = runner_l([tokenize_chunks(runner_l.tokenizer, p, comma_padding_backtrack) for p in parts])
            if ctx_l.shape[1] != ctx_g.shape[1]:  # both tokenizers chunk the same text identically
                raise RuntimeError("SDXL text encoders produced different chunk counts")
            context = torch.cat([ctx_l, ctx_g], dim=-1)
            time_ids = [height, width, sdxl_crop_top, sdxl_crop_left, height, width]
        else:  # refiner: bigG only, aesthetic score instead of the target size
            context = ctx_g
            score = refiner_aesthetic_score if refiner_aesthetic_score is not None else (2.5 if is_negative else 6.0)
            time_ids = [height, width, sdxl_crop_top, sdxl_crop_left, score]
        if is_negative and all(p == "" for p in prompts):
            # sgm's force_zero_embeddings for an empty negative prompt: text outputs zeroed, size vector kept
            context = torch.zeros_like(context)
            pooled = torch.zeros_like(pooled)
        ids = torch.tensor([time_ids] * len(prompts), device=context.device, dtype=context.dtype)
        return Cond(context, {"text_embeds": pooled, "time_ids": ids})
