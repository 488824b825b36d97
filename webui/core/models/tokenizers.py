"""CLIP tokenizers built offline.

Every SD text encoder (OpenAI CLIP-L for SD1.x/SDXL, OpenCLIP ViT-H/bigG for SD2.x/SDXL) uses the same 49408-token
byte-level BPE. transformers would download ``vocab.json``/``merges.txt`` from the Hub; we cannot. The BPE merge
list ships inside the ``open-clip-torch`` wheel (``bpe_simple_vocab_16e6.txt.gz``), and the vocabulary is defined
from it (OpenAI's simple_tokenizer: 256 byte symbols, the same with ``</w>``, one entry per merge, then the two
special tokens), so we derive both files once into a cache folder and hand them to ``CLIPTokenizer``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from functools import lru_cache

from webui.core.io.files import atomic_write

N_MERGES = 49152 - 256 - 2  # the merges OpenAI's tokenizer uses (vocab 49408 = 512 byte symbols + merges + 2)


def _bytes_to_unicode() -> dict[int, str]:
    """OpenAI CLIP's reversible byte -> printable unicode table (same as GPT-2's)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def bpe_source_path() -> str:
    """Locate open_clip's BPE file without importing open_clip (which would import torch and timm)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open-clip-torch is not installed; it ships the CLIP BPE vocabulary the tokenizer needs")
    path = os.path.join(list(spec.submodule_search_locations)[0], "bpe_simple_vocab_16e6.txt.gz")
    if not os.path.exists(path):
        raise RuntimeError(f"CLIP BPE vocabulary not found at {path}")
    return path


def write_tokenizer_files(folder: str) -> str:
    """Write ``vocab.json`` and ``merges.txt`` for CLIP into ``folder`` (idempotent, atomic) and return it."""
    vocab_path = os.path.join(folder, "vocab.json")
    merges_path = os.path.join(folder, "merges.txt")
    if os.path.exists(vocab_path) and os.path.exists(merges_path):
        return folder
    os.makedirs(folder, exist_ok=True)
    lines = gzip.open(bpe_source_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    for path, text in (
        (vocab_path, json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False)),
        (merges_path, "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"),
    ):
        atomic_write(path, text)
    return folder


@lru_cache(maxsize=4)
def clip_tokenizer(folder: str, pad_token: str = "<|endoftext|>"):
    """A transformers ``CLIPTokenizer``; SD1/CLIP-L pads with ``<|endoftext|>``, OpenCLIP (SD2, SDXL's G) with ``!``.

    Cached per folder and pad token: a tokenizer is immutable once built and costs ~1 s to construct.
    """
    from transformers import CLIPTokenizer

    write_tokenizer_files(folder)
    return CLIPTokenizer(
        os.path.join(folder, "vocab.json"),
        os.path.join(folder, "merges.txt"),
        pad_token=pad_token,
        model_max_length=77,
    )
