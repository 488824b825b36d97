"""Prompt -> conditioning on tiny checkpoints loaded through the real loader: A1111's chunking, BREAK, emphasis modes,
clip skip, prompt editing schedules, AND composition, and the CFG denoiser's use of them."""

from __future__ import annotations

import os

import pytest
import torch

from pipelines.denoiser import CFGDenoiser, Cond
from webui.core.generation.conditioning import (
    EncoderOptions,
    PromptEncoder,
    ScheduledConds,
    SchedulingOptions,
    get_learned_conditioning,
    get_multicond_learned_conditioning,
    tokenize_chunks,
)
from webui.core.devices import plan_devices
from webui.core.models.loader import load_components
from webui.core.types import CheckpointInfo


@pytest.fixture(scope="module")
def sd1(models_root, tokenizer_dir):
    _, paths = models_root
    info = CheckpointInfo(filename=paths["SD1"], name=os.path.basename(paths["SD1"]), model_name="tiny-sd15")
    return load_components(info, plan_devices(), tokenizer_dir)


@pytest.fixture(scope="module")
def sdxl(models_root, tokenizer_dir):
    _, paths = models_root
    info = CheckpointInfo(filename=paths["SDXL"], name=os.path.basename(paths["SDXL"]), model_name="tiny-sdxl")
    return load_components(info, plan_devices(), tokenizer_dir)


def _enc(comp, **opts):
    return PromptEncoder(comp, EncoderOptions(**opts), width=64, height=64)


def test_chunk_boundaries_75_and_150(sd1):
    enc = _enc(sd1)
    assert enc(["cat " * 75]).context.shape[1] == 77  # 75 tokens fit one chunk (+BOS/EOS)
    assert enc(["cat " * 76]).context.shape[1] == 154
    assert enc(["cat " * 150]).context.shape[1] == 154
    assert enc(["cat " * 151]).context.shape[1] == 231


def test_break_starts_a_new_chunk_and_equals_separate_encoding(sd1):
    enc = _enc(sd1)
    both = enc(["a red cat BREAK a blue dog"]).context
    assert both.shape[1] == 154
    first = enc(["a red cat"]).context
    second = enc(["a blue dog"]).context
    assert torch.equal(both[:, :77], first)
    assert torch.equal(both[:, 77:], second)


def test_comma_backtrack_moves_the_tail_to_the_next_chunk(sd1):
    tok = sd1.tokenizer
    cat = tok("cat", add_special_tokens=False)["input_ids"][0]
    comma = tok.get_vocab()[",</w>"]
    text = "cat " * 70 + ", " + "cat " * 10  # comma at token 70; chunk fills at 75
    chunks = tokenize_chunks(tok, [(text, 1.0)], comma_padding_backtrack=20)
    assert len(chunks) == 2
    # first chunk: BOS, 70 cats, the comma, then padding (end tokens); the 4 cats after the comma moved on
    assert chunks[0].tokens[1:72] == [cat] * 70 + [comma]
    assert set(chunks[0].tokens[72:]) == {tok.eos_token_id}
    assert chunks[1].tokens[1:11] == [cat] * 10
    # with backtracking off the chunk is cut at exactly 75 tokens
    hard = tokenize_chunks(tok, [(text, 1.0)], comma_padding_backtrack=0)
    assert hard[0].tokens[72:76] == [cat] * 4


def test_emphasis_modes(sd1):
    plain = _enc(sd1)(["a cat"]).context
    # "(cat:1.5)": the token "cat" (position 2 after BOS and "a") weighs 1.5
    mults = torch.ones(1, 77)
    mults[0, 2] = 1.5
    weighted = plain * mults[..., None]
    original = _enc(sd1, emphasis="Original")(["a (cat:1.5)"]).context
    torch.testing.assert_close(original, weighted * (plain.mean() / weighted.mean()))
    no_norm = _enc(sd1, emphasis="No norm")(["a (cat:1.5)"]).context
    torch.testing.assert_close(no_norm, weighted)
    ignore = _enc(sd1, emphasis="Ignore")(["a (cat:1.5)"]).context
    assert torch.equal(ignore, plain)
    # "None": the brackets are plain text, so different tokens and a different result; reported in the infotext
    enc_none = _enc(sd1, emphasis="None")
    literal = enc_none(["a (cat:1.5)"]).context
    assert not torch.allclose(literal, plain)
    assert enc_none.report.infotext_params() == {"Emphasis": "None"}


def test_clip_skip_2_is_the_normed_penultimate_layer(sd1):
    skip1 = _enc(sd1, clip_skip=1)(["a cat"]).context
    skip2 = _enc(sd1, clip_skip=2)(["a cat"]).context
    assert not torch.allclose(skip1, skip2)
    ids = torch.asarray([sd1.tokenizer("a cat", padding="max_length", max_length=77)["input_ids"]])
    with torch.no_grad():
        out = sd1.text_encoder(input_ids=ids, output_hidden_states=True)
        expected = getattr(sd1.text_encoder, "text_model", sd1.text_encoder).final_layer_norm(out.hidden_states[-2])
    torch.testing.assert_close(skip2, expected)


def test_prompt_editing_switches_at_the_right_step(sd1):
    enc = _enc(sd1)
    cat, dog = enc(["a cat photo"]).context, enc(["a dog photo"]).context
    sched = SchedulingOptions(steps=10)
    c = get_multicond_learned_conditioning(enc, ["a [cat:dog:4] photo"], sched)
    uc = get_learned_conditioning(enc, [""], sched, is_negative=True)
    conds = ScheduledConds(c, uc)
    assert conds.change_steps() == [4]
    for step in range(10):
        _, cond, _ = conds.at(step)
        expected = cat if step <= 4 else dog  # A1111: entry used while step <= end_at_step
        assert torch.equal(cond.context, expected), step
    # a fraction of the steps: 0.5 of 10 -> step 5
    c = get_multicond_learned_conditioning(enc, ["a [cat:dog:0.5] photo"], sched)
    assert ScheduledConds(c, uc).change_steps() == [5]


def test_alternation_alternates_every_step(sd1):
    enc = _enc(sd1)
    cat, dog = enc(["a cat"]).context, enc(["a dog"]).context
    sched = SchedulingOptions(steps=4)
    conds = ScheduledConds(get_multicond_learned_conditioning(enc, ["a [cat|dog]"], sched),
                           get_learned_conditioning(enc, [""], sched, is_negative=True))
    seen = [conds.at(step)[1].context for step in range(4)]
    # A1111's schedule is [(1, cat), (2, dog), (3, cat), (4, dog)] while its denoiser counts calls from 0, so calls
    # 0 and 1 both use "cat": the first switch comes one call late, a quirk kept for same-seed results.
    assert [torch.equal(s, cat) for s in seen] == [True, True, False, True]
    assert [torch.equal(s, dog) for s in seen] == [False, False, True, False]


def test_and_composition_weights_and_denoiser_combination(sd1):
    enc = _enc(sd1)
    sched = SchedulingOptions(steps=2)
    c = get_multicond_learned_conditioning(enc, ["a cat AND a dog :0.5"], sched)
    uc = get_learned_conditioning(enc, ["ugly"], sched, is_negative=True)
    conds = ScheduledConds(c, uc)
    conds_list, cond, uncond = conds.at(0)
    assert conds_list == [[(0, 1.0), (1, 0.5)]]
    assert len(cond) == 2 and len(uncond) == 1
    assert torch.equal(cond.context[1:], enc(["a dog"]).context)

    # the CFG combination: uncond + sum(weight * scale * (cond_i - uncond)) (A1111 combine_denoised)
    outputs = {}

    def inner(x, sigma, c: Cond):
        # a fake model whose output depends on the conditioning rows, so the combination is checkable
        out = x + c.context.mean(dim=(1, 2))[:, None, None, None]
        outputs["last"] = out
        return out

    model = CFGDenoiser(inner, conds, cfg_scale=7.0)
    x = torch.zeros(1, 4, 8, 8)
    denoised = model(x, torch.ones(1))
    out = outputs["last"]
    expected = out[2] + 7.0 * 1.0 * (out[0] - out[2]) + 7.0 * 0.5 * (out[1] - out[2])
    torch.testing.assert_close(denoised[0], expected)
    assert model.step == 1


def test_cond_and_uncond_of_different_lengths_run_separately(sd1):
    enc = _enc(sd1)
    sched = SchedulingOptions(steps=1)
    conds = ScheduledConds(get_multicond_learned_conditioning(enc, ["cat " * 80], sched),
                           get_learned_conditioning(enc, ["dog"], sched, is_negative=True))
    calls = []

    def inner(x, sigma, c: Cond):
        calls.append(c.context.shape[1])
        return x

    CFGDenoiser(inner, conds, cfg_scale=7.0)(torch.zeros(1, 4, 8, 8), torch.ones(1))
    assert calls == [154, 77]


def test_sdxl_conditioning_shapes_and_empty_negative(sdxl):
    enc = PromptEncoder(sdxl, EncoderOptions(), width=96, height=64)
    cond = enc(["a cat"])
    l_width = sdxl.text_encoder.config.hidden_size
    g_width = sdxl.text_encoder_2.config.hidden_size
    assert cond.context.shape == (1, 77, l_width + g_width)
    assert cond.added["text_embeds"].shape == (1, sdxl.text_encoder_2.config.projection_dim)
    assert cond.added["time_ids"].tolist() == [[64, 96, 0, 0, 64, 96]]
    neg = enc([""], is_negative=True)
    assert torch.count_nonzero(neg.context) == 0 and torch.count_nonzero(neg.added["text_embeds"]) == 0
    # clip skip leaves SDXL's CLIP-L at its penultimate layer unless sdxl_clip_l_skip is on
    skip3 = PromptEncoder(sdxl, EncoderOptions(clip_skip=3), width=96, height=64)(["a cat"])
    assert torch.equal(skip3.context, cond.context)
    skip3_l = PromptEncoder(sdxl, EncoderOptions(clip_skip=3, sdxl_clip_l_skip=True), width=96, height=64)(["a cat"])
    assert not torch.equal(skip3_l.context[..., :l_width], cond.context[..., :l_width])
    assert torch.equal(skip3_l.context[..., l_width:], cond.context[..., l_width:])


def test_pad_cond_uncond_options(sd1):
    """A1111 options: pad_cond_uncond appends empty-prompt chunks to the shorter side, pad_cond_uncond_v0 repeats the
    negative's last vector; both make cond and uncond one batch of the same length."""
    enc = _enc(sd1)
    sched = SchedulingOptions(steps=1)
    conds = ScheduledConds(get_multicond_learned_conditioning(enc, ["cat " * 80], sched),
                           get_learned_conditioning(enc, ["dog"], sched, is_negative=True))
    empty = enc([""]).context
    dog = enc(["dog"]).context
    seen = []

    def inner(x, sigma, c: Cond):
        seen.append(c.context)
        return x

    CFGDenoiser(inner, conds, cfg_scale=7.0, empty_context=empty)(torch.zeros(1, 4, 8, 8), torch.ones(1))
    assert len(seen) == 1 and seen[0].shape[1] == 154
    assert torch.equal(seen[0][1:, :77], dog) and torch.equal(seen[0][1:, 77:], empty)
    seen.clear()
    CFGDenoiser(inner, conds, cfg_scale=7.0, pad_cond_uncond_v0=True)(torch.zeros(1, 4, 8, 8), torch.ones(1))
    assert len(seen) == 1 and torch.equal(seen[0][1:, 77:], dog[:, -1:].repeat(1, 77, 1))


def test_original_emphasis_under_fp16_is_a1111s_float32_arithmetic():
    """A1111 sd_emphasis.EmphasisOriginal on an fp16 encoder output: multipliers from torch.asarray of Python floats
    (float32), so z is promoted to float32; the original mean in fp16, the new one in float32. The prompt of issue
    13 item 1, "(cat:1.3), [dog]": weights 1.3 on "cat" and 1/1.1 on "dog" after the BOS token."""
    from webui.core.generation.conditioning import PromptChunk, TextEncoderRunner

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 77, 8, generator=gen).half()
    mults = [1.0] * 77
    mults[1], mults[3] = 1.3, 1 / 1.1
    batch = [PromptChunk([0] * 77, list(mults)), PromptChunk([0] * 77, [1.0] * 77)]
    runner = TextEncoderRunner.__new__(TextEncoderRunner)
    runner.options = EncoderOptions(emphasis="Original")
    out = runner._emphasis(z, batch)

    # A1111, line by line
    a1111_mults = torch.asarray([mults, [1.0] * 77])
    original_mean = z.mean()
    expected = z * a1111_mults.reshape(a1111_mults.shape + (1,)).expand(z.shape)
    expected = expected * (original_mean / expected.mean())
    assert expected.dtype == torch.float32 and out.dtype == torch.float32
    assert torch.equal(out, expected)
    # what the old fp16 arithmetic gave is measurably different
    half_mults = torch.asarray([mults, [1.0] * 77], dtype=torch.float16)
    old = z * half_mults[..., None]
    old = old * (original_mean / old.mean())
    assert not torch.equal(old.float(), expected)


def test_clip_skip_beyond_the_encoder_is_a_request_error(sd1):
    from webui.core.generation.context import GenerationError

    depth = sd1.text_encoder.config.num_hidden_layers + 1  # the embeddings' output and each layer's
    _enc(sd1, clip_skip=depth)(["a cat"])  # the deepest skip that exists works, as in A1111
    with pytest.raises(GenerationError, match="clip_skip"):
        _enc(sd1, clip_skip=depth + 1)(["a cat"])
