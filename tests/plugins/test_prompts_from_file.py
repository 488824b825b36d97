"""Prompts from file or textbox (A1111 scripts/prompts_from_file.py): its args, A1111's line syntax, one image per
line with the line's settings, and bad lines refused before anything runs (real app, tiny checkpoints)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from webui.app import build_app
from webui.config import parse
from webui.plugins.builtin.scripts.prompts_from_file import ScriptPromptsFromFile, cmdargs, parse_lines
from webui.plugins.scripts import ScriptError

BODY = {"prompt": "", "steps": 1, "width": 64, "height": 64, "seed": 5, "sampler_name": "Euler"}


@pytest.fixture
def client(data_dir):
    config = parse(["--nowebui", "--data-dir", str(data_dir), "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as c:
        yield c


def test_args_are_a1111s():
    args = ScriptPromptsFromFile().ui(False)
    assert [(a.label, a.value) for a in args] == [
        ("Iterate seed every line", False), ("Use same random seed for all lines", False),
        ("Insert prompts at the", "start"), ("List of prompt inputs", ""),
    ]
    assert args[2].choices == ["start", "end"]


@pytest.mark.parametrize("line, expected", [
    ('--prompt "a cat" --steps 10', {"prompt": "a cat", "steps": 10}),
    ("--prompt a red cat --negative_prompt blurry dog --seed 7", {"prompt": "a red cat",
                                                                   "negative_prompt": "blurry dog", "seed": 7}),
    ("--cfg_scale 6.5 --subseed_strength 0.25 --width 64 --height 48",
     {"cfg_scale": 6.5, "subseed_strength": 0.25, "width": 64, "height": 48}),
    ("--restore_faces true --tiling false --do_not_save_grid TRUE",
     {"restore_faces": True, "tiling": False, "do_not_save_grid": False}),  # only "true" is true, as in A1111
    ("--sampler_name 'euler a' --n_iter 2 --batch_size 3", {"sampler_name": "Euler a", "n_iter": 2, "batch_size": 3}),
    ("--sampler_name k_euler", {"sampler_name": "Euler"}),  # an alias, case-insensitive (A1111 samplers_map)
    ("--styles 'my style' --prompt_for_display shown", {"styles": "my style", "prompt_for_display": "shown"}),
    ("--seed_resize_from_w 32 --seed_resize_from_h 16 --subseed 3",
     {"seed_resize_from_w": 32, "seed_resize_from_h": 16, "subseed": 3}),
])
def test_cmdargs_types_and_quoting(line, expected):
    assert cmdargs(line) == expected


@pytest.mark.parametrize("line, words", [
    ("--prompt x --foo 1", ["unknown commandline option: --foo", "--steps", "--sampler_name"]),
    ("--steps", ["missing argument for command line option --steps"]),
    ("--steps ten", ["--steps needs an integer", "'ten'"]),
    ("--cfg_scale high", ["--cfg_scale needs a number"]),
    ("--sampler_name nosuch", ["unknown sampler 'nosuch'", "Euler a"]),
    ("--prompt 'unclosed", ["No closing quotation"]),
    ("--sampler_index 999", ["out of range"]),
])
def test_bad_lines_are_script_errors_naming_the_line(line, words):
    with pytest.raises(ScriptError) as e:
        parse_lines(f"a fine line\n{line}")
    message = str(e.value)
    assert message.startswith("Prompts from file or textbox: line 2") and repr(line) in message
    for w in words:
        assert w in message


def test_plain_lines_bytes_and_blank_lines():
    assert parse_lines("a cat\n\n  a dog -- with dashes  \n") == [{"prompt": "a cat"}, {"prompt": "a dog -- with dashes"}]
    assert parse_lines(" one \r\ntwo\n".encode()) == [{"prompt": "one"}, {"prompt": "two"}]  # the uploaded file


def test_one_image_per_line_with_the_lines_settings(client):
    text = 'a red cat\n--prompt "a blue dog" --steps 2 --seed 77 --cfg_scale 4.5 --negative_prompt ugly'
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "script_name": "prompts from file or textbox",
                                               "script_args": [False, False, "start", text]})
    assert r.status_code == 200, r.text
    data = r.json()
    info = json.loads(data["info"])
    assert len(data["images"]) == 2 and len(info["infotexts"]) == 2
    first, second = info["infotexts"]
    assert first.startswith("a red cat\n") and "Steps: 1," in first and "Seed: 5," in first
    assert second.startswith("a blue dog\nNegative prompt: ugly\n")
    assert "Steps: 2," in second and "Seed: 77," in second and "CFG scale: 4.5," in second
    assert info["all_prompts"] == ["a red cat", "a blue dog"]


def test_iterate_seed_and_prompt_position(client):
    body = {**BODY, "prompt": "base", "negative_prompt": "neg", "script_name": "Prompts from file or textbox"}
    r = client.post("/sdapi/v1/txt2img", json={**body, "script_args": [True, False, "end",
                                                                       "one\n--prompt two --negative_prompt n2"]})
    assert r.status_code == 200, r.text
    texts = json.loads(r.json()["info"])["infotexts"]
    assert texts[0].startswith("base one\nNegative prompt: neg\n") and "Seed: 5," in texts[0]
    assert texts[1].startswith("base two\nNegative prompt: neg n2\n") and "Seed: 6," in texts[1]  # seed + 1 per line
    r = client.post("/sdapi/v1/txt2img", json={**body, "script_args": [False, False, "start", "one"]})
    assert json.loads(r.json()["info"])["infotexts"][0].startswith("one base\n")


def test_unknown_option_is_a_4xx_before_any_image(client, monkeypatch):
    import webui.core.generation.processing as processing

    calls = []
    real = processing.process_images
    monkeypatch.setattr(processing, "process_images", lambda p: calls.append(1) or real(p))
    text = "a cat\n--prompt dog --bogus 3"
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "script_name": "Prompts from file or textbox",
                                               "script_args": [False, False, "start", text]})
    assert 400 <= r.status_code < 500, r.text
    body = json.dumps(r.json())
    assert "Prompts from file or textbox" in body and "--bogus" in body and "line 2" in body and "--steps" in body
    assert calls == []  # the first (good) line was not generated either
