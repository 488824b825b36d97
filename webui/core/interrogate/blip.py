"""BLIP captions, as A1111's Interrogate CLIP makes them (``modules/interrogate.py`` -> Salesforce BLIP's
``blip_decoder(...).generate``), computed with transformers' ``BlipForConditionalGeneration``.

A1111 reads Salesforce's original checkpoint ``models/BLIP/model_base_caption_capfilt_large.pth`` (``{"model": state
dict}`` in BLIP's own key layout: a timm-style ViT under ``visual_encoder.*`` and a BERT decoder with cross attention
under ``text_decoder.*``) and runs it with the BLIP repository's code. We read the same file and rename its keys to
transformers' BLIP layout -- the renames of transformers' own ``convert_blip_original_pytorch_to_hf.py`` (the
ViT's fused ``qkv`` stays fused in ``BlipAttention``; the decoder's names are already the same) -- and load them
strictly: a key left over or missing is an error that names it, never a silently random layer.

The architecture is read from the tensors' shapes (widths, depths, patch size, the position table's grid); for the
real file that gives BLIP base exactly as A1111 builds it (ViT-B/16 at 384 px, BERT-base with a 30524-token
vocabulary). The text side needs bert-base-uncased's tokenizer (``vocab.txt``) plus BLIP's two added tokens
(``[DEC]`` the decoder's bos, ``[ENC]``), as BLIP's ``init_tokenizer``; it is read from
``models/BLIP/bert-base-uncased/`` or, offline, from the Hugging Face cache where A1111's BLIP left it.
Nothing is ever downloaded.
"""

from __future__ import annotations

import os
import re
from typing import Any

from webui.core.interrogate import InterrogatorUnavailable

#: A1111's file name and download URL (interrogate.py:load_blip_model); we only name the URL in messages.
BLIP_FILE = "model_base_caption_capfilt_large.pth"
BLIP_URL = "https://storage.googleapis.com/sfr-vision-language-research/BLIP/models/" + BLIP_FILE
#: The tokenizer folder we read under models/BLIP (the layout ``save_pretrained`` writes; vocab.txt is what counts).
TOKENIZER_DIR = "bert-base-uncased"
#: BLIP's caption prompt (blip.py: BLIP_Decoder(prompt='a picture of ')).
PROMPT = "a picture of "
#: A1111's blip_image_eval_size; the real checkpoint's position table gives the same.
BLIP_IMAGE_SIZE = 384
#: CLIP's normalisation, which BLIP's transform uses too (interrogate.py:generate_caption).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Attention head width of BLIP's ViT (base: 768/12, large: 1024/16) and of BERT-base (768/12): heads are not
#: stored in a state dict, so they are the width over this.
HEAD_DIM = 64

# Original BLIP name -> transformers name, applied in order (transformers' convert_blip_original_pytorch_to_hf.py
# rename_key, written as anchored patterns so that a text key containing "attn"/"norm" is never touched).
_VISION_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^visual_encoder\.cls_token$", "vision_model.embeddings.class_embedding"),
    (r"^visual_encoder\.pos_embed$", "vision_model.embeddings.position_embedding"),
    (r"^visual_encoder\.patch_embed\.proj\.", "vision_model.embeddings.patch_embedding."),
    (r"^visual_encoder\.norm\.", "vision_model.post_layernorm."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm1\.", r"vision_model.encoder.layers.\1.layer_norm1."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm2\.", r"vision_model.encoder.layers.\1.layer_norm2."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.", r"vision_model.encoder.layers.\1.self_attn.qkv."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.", r"vision_model.encoder.layers.\1.self_attn.projection."),
    (r"^visual_encoder\.blocks\.(\d+)\.mlp\.", r"vision_model.encoder.layers.\1.mlp."),
)
#: Buffers, not weights: BLIP's BERT saved its position index table, transformers builds its own (non-persistent).
_IGNORED = re.compile(r"(^|\.)position_ids$")
#: Weights transformers ties to another (decoder <- word embeddings, decoder bias <- predictions bias): a checkpoint
#: may hold them (BLIP's does, the same tensors) or not.
_TIED = {
    "text_decoder.cls.predictions.decoder.weight": "text_decoder.bert.embeddings.word_embeddings.weight",
    "text_decoder.cls.predictions.decoder.bias": "text_decoder.cls.predictions.bias",
}


def convert_state_dict(original: dict[str, Any]) -> dict[str, Any]:
    """BLIP's original caption-model keys -> ``BlipForConditionalGeneration`` keys (values untouched).

    ``text_decoder.*`` keeps its names (transformers' BlipTextLMHeadModel mirrors BLIP's med.py BertLMHeadModel);
    ``visual_encoder.*`` is renamed as above. Any other key (another BLIP head, a momentum encoder) passes through
    unchanged, so the strict load names it."""
    out: dict[str, Any] = {}
    for key, value in original.items():
        if _IGNORED.search(key):
            continue
        new = key
        if key.startswith("visual_encoder."):
            for pattern, repl in _VISION_RENAMES:
                new, n = re.subn(pattern, repl, key)
                if n:
                    break
        out[new] = value
    return out


def _count(sd: dict[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def config_from_state_dict(sd: dict[str, Any], tokenizer: Any):
    """The transformers BlipConfig for a converted BLIP caption state dict, read from its shapes.

    Equal to BLIP's own construction for the real file: ``create_vit('base', 384)`` (LayerNorm eps 1e-6, timm's)
    and med_config.json (BERT-base, eps 1e-12, vocab 30524, cross attention to the ViT's width). Token ids come
    from the tokenizer, as BLIP's generate passes them (bos = [DEC], eos = [SEP], pad = [PAD])."""
    from transformers import BlipConfig

    try:
        v_width = sd["vision_model.embeddings.class_embedding"].shape[-1]
        patch = sd["vision_model.embeddings.patch_embedding.weight"].shape[-1]
        positions = sd["vision_model.embeddings.position_embedding"].shape[1]
        v_layers = _count(sd, r"^vision_model\.encoder\.layers\.(\d+)\.")
        v_mlp = sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0]
        vocab, t_width = sd["text_decoder.bert.embeddings.word_embeddings.weight"].shape
        t_positions = sd["text_decoder.bert.embeddings.position_embeddings.weight"].shape[0]
        t_layers = _count(sd, r"^text_decoder\.bert\.encoder\.layer\.(\d+)\.")
        t_mlp = sd["text_decoder.bert.encoder.layer.0.intermediate.dense.weight"].shape[0]
        cross_width = sd["text_decoder.bert.encoder.layer.0.crossattention.self.key.weight"].shape[1]
    except (KeyError, IndexError) as e:
        raise InterrogatorUnavailable(f"not a BLIP caption checkpoint (no {e}): expected Salesforce's "
                                      f"{BLIP_FILE} layout (visual_encoder.*, text_decoder.*)") from None
    grid = round((positions - 1) ** 0.5)
    if grid * grid + 1 != positions:
        raise InterrogatorUnavailable(f"BLIP checkpoint: position table of {positions} rows is not a square grid + 1")
    return BlipConfig(
        vision_config={
            "hidden_size": v_width, "intermediate_size": v_mlp, "num_hidden_layers": v_layers,
            "num_attention_heads": max(1, v_width // HEAD_DIM), "image_size": grid * patch, "patch_size": patch,
            "hidden_act": "gelu", "layer_norm_eps": 1e-6, "attention_dropout": 0.0,
        },
        text_config={
            "vocab_size": vocab, "hidden_size": t_width, "encoder_hidden_size": cross_width, "intermediate_size": t_mlp,
            "num_hidden_layers": t_layers, "num_attention_heads": max(1, t_width // HEAD_DIM),
            "max_position_embeddings": t_positions, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "bos_token_id": tokenizer.bos_token_id, "sep_token_id": tokenizer.sep_token_id,
            "eos_token_id": tokenizer.sep_token_id, "pad_token_id": tokenizer.pad_token_id,
        },
    )


def tokenizer_folder(blip_dir: str) -> str | None:
    """Where bert-base-uncased's tokenizer files are: ``<blip_dir>/bert-base-uncased/`` when it has a
    ``vocab.txt``, else the Hugging Face cache's snapshot (A1111's BLIP called
    ``BertTokenizer.from_pretrained('bert-base-uncased')``, which left it there), else None."""
    from huggingface_hub import constants, try_to_load_from_cache

    local = os.path.join(blip_dir, TOKENIZER_DIR)
    if os.path.isfile(os.path.join(local, "vocab.txt")):
        return local
    # The cache folder is read now (not at import), so HF_HUB_CACHE / HF_HOME as set for this process count. The
    # file is looked up explicitly: from_pretrained would build an empty-vocabulary tokenizer without it.
    cached = try_to_load_from_cache(TOKENIZER_DIR, "vocab.txt", cache_dir=constants.HF_HUB_CACHE)
    return os.path.dirname(cached) if isinstance(cached, str) and os.path.isfile(cached) else None


def missing_files(blip_dir: str) -> list[str]:
    """Each file a BLIP caption needs that is absent, in words: the weights, the tokenizer's vocab.txt."""
    from huggingface_hub import constants

    missing = []
    path = os.path.join(blip_dir, BLIP_FILE)
    if not os.path.isfile(path):
        missing.append(f"{path} (BLIP caption weights; A1111 downloads them from {BLIP_URL})")
    if tokenizer_folder(blip_dir) is None:
        missing.append(f"{os.path.join(blip_dir, TOKENIZER_DIR, 'vocab.txt')} (bert-base-uncased's tokenizer "
                       f"for BLIP; or 'bert-base-uncased' in the Hugging Face cache {constants.HF_HUB_CACHE})")
    return missing


def load_tokenizer(blip_dir: str):
    """bert-base-uncased's tokenizer (see :func:`tokenizer_folder`) with BLIP's ``[DEC]`` (bos) and ``[ENC]``
    added (blip.py:init_tokenizer). Read offline; InterrogatorUnavailable naming both places when absent."""
    from transformers import BertTokenizer

    folder = tokenizer_folder(blip_dir)
    if folder is None:
        raise InterrogatorUnavailable("BLIP cannot run, files missing: " + "; ".join(missing_files(blip_dir))
                                      + ". Nothing is downloaded: put the files there.")
    tokenizer = BertTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


class BlipCaptioner:
    """BLIP's caption decoder loaded from ``<blip_dir>/model_base_caption_capfilt_large.pth`` (CPU, float32 until
    :meth:`to`). ``caption`` is BLIP's ``generate(image, sample=False, ...)``: beam search, prompt stripped."""

    def __init__(self, blip_dir: str):
        missing = missing_files(blip_dir)
        if missing:
            raise InterrogatorUnavailable("BLIP cannot run, files missing: " + "; ".join(missing)
                                          + ". Nothing is downloaded: put the files there.")
        path = os.path.join(blip_dir, BLIP_FILE)
        self.tokenizer = load_tokenizer(blip_dir)
        self.model = load_model(path, self.tokenizer)
        self.image_size = self.model.config.vision_config.image_size

    def to(self, device: Any, dtype: Any = None) -> BlipCaptioner:
        self.model.to(device=device, dtype=dtype)
        return self

    def transform(self, pil_image: Any):
        """BLIP's eval transform as A1111 writes it (interrogate.py:generate_caption): a square BICUBIC resize to
        the model's size (384), ToTensor, CLIP's normalisation."""
        from torchvision import transforms
        from torchvision.transforms.functional import InterpolationMode

        size = self.image_size
        return transforms.Compose([
            transforms.Resize((size, size), interpolation=InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ])(pil_image.convert("RGB") if pil_image.mode != "RGB" else pil_image)

    def caption(self, pil_image: Any, *, num_beams: int, min_length: int, max_length: int, device: Any,
                dtype: Any) -> str:
        """The caption of one image, as BLIP's ``generate(image, sample=False, num_beams, max_length, min_length)``.

        BLIP passes min/max length straight to ``generate`` as totals of the decoder's sequence, which starts
        with the prompt's tokens ([DEC] a picture of): so the caption has at most ``max_length - 4`` and, unless
        the image ends it sooner, at least ``min_length - 4`` tokens, as in A1111. The prompt's text is cut from
        the decoded string (``caption[len(prompt):]``)."""
        import torch

        pixels = self.transform(pil_image).unsqueeze(0).to(device=device, dtype=dtype)
        # BLIP: tokenizer(prompt) = [CLS] a picture of [SEP]; generate replaces [CLS] by [DEC] and drops [SEP]
        # (BlipForConditionalGeneration.generate does both, like blip.py).
        input_ids = self.tokenizer([PROMPT], return_tensors="pt").input_ids.to(device)
        with torch.no_grad():
            out = self.model.generate(pixel_values=pixels, input_ids=input_ids, do_sample=False,
                                      num_beams=int(num_beams), max_length=int(max_length),
                                      min_length=int(min_length), repetition_penalty=1.0)
        text = self.tokenizer.decode(out[0], skip_special_tokens=True)
        return text[len(PROMPT):]


def key_problems(expected: dict[str, Any], sd: dict[str, Any]) -> list[str]:
    """What keeps ``sd`` (converted) from loading strictly into a model whose state dict is ``expected``: missing,
    unexpected and wrong-shaped keys, a few of each named. Tied weights and position-id buffers may be absent."""
    missing = [k for k in expected if k not in sd and not _IGNORED.search(k) and _TIED.get(k) not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong_shape = [f"{k} {tuple(v.shape)} != {tuple(expected[k].shape)}" for k, v in sd.items()
                   if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            more = f" (+{len(keys) - 8} more)" if len(keys) > 8 else ""
            problems.append(f"{what}: {', '.join(keys[:8])}{more}")
    return problems


def load_model(path: str, tokenizer: Any):
    """Read BLIP's original checkpoint and load it, converted, into a transformers model; strict."""
    import torch
    from transformers import BlipForConditionalGeneration

    try:
        # weights_only: the file is a dict of tensors; never run pickled code from a downloaded file.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same answer: name it
        raise InterrogatorUnavailable(f"cannot read the BLIP checkpoint {path}: {type(e).__name__}: {e}") from None
    original = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(original, dict):
        raise InterrogatorUnavailable(f"{path} is not a BLIP checkpoint (expected a dict with 'model')")
    sd = convert_state_dict(original)
    config = config_from_state_dict(sd, tokenizer)
    if config.text_config.vocab_size != len(tokenizer):
        raise InterrogatorUnavailable(
            f"BLIP checkpoint {path} has a {config.text_config.vocab_size}-token vocabulary, its tokenizer "
            f"{len(tokenizer)} (bert-base-uncased + [DEC] + [ENC] is 30524): wrong vocab.txt?")
    model = BlipForConditionalGeneration(config)
    problems = key_problems(model.state_dict(), sd)
    if problems:
        raise InterrogatorUnavailable(f"BLIP checkpoint {path} does not match BLIP's caption model ("
                                      + "; ".join(problems) + ")")
    model.load_state_dict(sd, strict=False)  # strictness checked above, with the tied and buffer keys allowed for
    return model.eval()
