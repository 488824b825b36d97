"""Dynamic Prompts, the built-in extension (extensions-builtin/sd-dynamic-prompts) on the dynamicprompts library: the
expansion on its own (variants, wildcards from the configured folder, seeds, combinatorial mode, the extension's
seed rules, what is refused), then through the API on the tiny checkpoint (loaded by the extension loader, its 18
positional args as sd-dynamic-prompts v2.17.1, the expanded prompts in the infotexts, the Template keys, the batch
count it sets)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import types
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from webui.app import build_app
from webui.config import parse
from webui.plugins.scripts import AlwaysVisible, ScriptError

pytest.importorskip("dynamicprompts")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "extensions-builtin" / "sd-dynamic-prompts" / "scripts" / "dynamic_prompting.py"


def _module():
    spec = importlib.util.spec_from_file_location("dynamic_prompting_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dp = _module()
LABELS = [
    "Dynamic Prompts enabled", "Combinatorial generation", "Combinatorial batches", "Magic prompt", "I'm feeling lucky",
    "Attention grabber", "Minimum attention", "Maximum attention", "Max magic prompt length", "Magic prompt creativity",
    "Fixed seed", "Unlink seed from prompt", "Don't apply to negative prompts", "Enable Jinja2 templates",
    "Don't generate images", "Max generations (0 = all combinations - the batch count value is ignored)",
    "Magic prompt model", "Magic prompt blocklist regex",
]


class Opts:
    def __init__(self, **values):
        self.values = values

    def get(self, key):
        if key not in self.values:
            raise KeyError(key)
        return self.values[key]


@pytest.fixture
def wildcards(tmp_path):
    folder = tmp_path / "wildcards"
    (folder / "animals").mkdir(parents=True)
    (folder / "color.txt").write_text("red\ngreen\nblue\n")
    (folder / "animals" / "pets.txt").write_text("cat\ndog\n")
    return folder


def _p(prompt, wildcards, *, n_iter=1, batch_size=1, seed=100, negative="", subseed_strength=0.0, is_img2img=False,
       **opts):
    n = n_iter * batch_size
    seeds = [seed + (i if subseed_strength == 0 else 0) for i in range(n)]
    return types.SimpleNamespace(
        all_prompts=[prompt] * n, all_negative_prompts=[negative] * n, prompt=prompt, negative_prompt=negative,
        n_iter=n_iter, batch_size=batch_size, all_seeds=seeds, all_subseeds=[7 + i for i in range(n)], seed=seed,
        subseed_strength=subseed_strength, extra_generation_params={}, plugin_data={}, is_img2img=is_img2img, comments=[],
        opts=Opts(wildcard_dir=str(wildcards), **opts))


def _args(**changes):
    args = [a.value for a in dp.ScriptDynamicPrompts().ui(False)]
    names = list(dp.ARG_NAMES)
    for name, value in changes.items():
        args[names.index(name)] = value
    return args


def _run(p, **changes):
    dp.ScriptDynamicPrompts().process(p, *_args(**changes))
    return p


def test_the_extensions_title_and_positional_args():
    script = dp.ScriptDynamicPrompts()
    assert script.title() == "Dynamic Prompts v2.17.1" and script.show(False) is AlwaysVisible
    ui = script.ui(False)
    assert [a.label for a in ui] == LABELS
    assert [a.value for a in ui] == [True, False, 1, False, False, False, 1.1, 1.5, 100, 0.7, False, False, True,
                                     False, False, 0, "Gustavosta/MagicPrompt-Stable-Diffusion", ""]


def test_variants_and_wildcards_follow_the_seed(wildcards):
    first = _run(_p("a {big|small} __color__ __animals/pets__", wildcards, n_iter=2, batch_size=3))
    again = _run(_p("a {big|small} __color__ __animals/pets__", wildcards, n_iter=2, batch_size=3))
    assert first.all_prompts == again.all_prompts  # the same seeds give the same expansion
    assert len(first.all_prompts) == 6 and first.n_iter == 2 and first.all_seeds == [100, 101, 102, 103, 104, 105]
    pattern = re.compile(r"a (big|small) (red|green|blue) (cat|dog)")
    assert all(pattern.fullmatch(p) for p in first.all_prompts)
    # image i's prompt comes from image i's seed: the image with seed 103 gets the same prompt in another job
    alone = _run(_p("a {big|small} __color__ __animals/pets__", wildcards, seed=103))
    assert alone.all_prompts == [first.all_prompts[3]]
    many = [p for s in range(40) for p in _run(_p("{big|small} __color__", wildcards, seed=s)).all_prompts]
    assert {p.split()[1] for p in many} == {"red", "green", "blue"}
    # a variation seed freezes the prompt for the whole job (the extension's FrozenPromptGenerator)
    frozen = _run(_p("a {big|small|huge|tiny} __color__", wildcards, batch_size=4, subseed_strength=0.5))
    assert len(set(frozen.all_prompts)) == 1 and frozen.all_seeds == [100] * 4


def test_combinatorial_gives_every_combination(wildcards):
    p = _run(_p("a {big|small} __color__", wildcards, batch_size=2, negative="{ugly|bad}"), is_combinatorial=True)
    # wildcard values sorted, as the extension's wildcard manager does by default
    combos = [f"a {size} {color}" for size in ("big", "small") for color in ("blue", "green", "red")]
    # every prompt with every negative prompt (the extension's cross product), batch count to fit them
    assert p.all_prompts == [c for c in combos for _ in range(2)]
    assert p.all_negative_prompts == ["ugly", "bad"] * 6
    assert p.n_iter == 6 and p.all_seeds == list(range(100, 112)) and p.all_subseeds == list(range(7, 19))
    capped = _run(_p("a {big|small} __color__", wildcards), is_combinatorial=True, max_generations=4)
    assert capped.all_prompts == combos[:4] and capped.n_iter == 4
    twice = _run(_p("{x|y}", wildcards), is_combinatorial=True, combinatorial_batches=2, use_fixed_seed=True)
    assert twice.all_prompts == ["x", "y", "x", "y"] and twice.all_seeds == [100, 100, 101, 101]


def test_seed_options_template_and_switches(wildcards):
    fixed = _run(_p("{a|b|c|d|e|f|g|h}", wildcards, batch_size=4), use_fixed_seed=True)
    assert fixed.all_seeds == [100] * 4 and len(set(fixed.all_prompts)) == 1
    off = _run(_p("{a|b}", wildcards, batch_size=2), is_enabled=False)
    assert off.all_prompts == ["{a|b}", "{a|b}"] and off.extra_generation_params == {}
    # A1111 syntax passes through untouched
    syntax = "(masterpiece:1.2), [a:b:0.5], <lora:x:1>, BREAK, [c|d] photo"
    assert _run(_p(syntax, wildcards)).all_prompts == [syntax]
    p = _run(_p("a {red|blue} cat", wildcards, negative="bad {x|y}", dp_write_raw_template=True))
    assert p.extra_generation_params == {"Template": "a {red|blue} cat", "Negative Template": "bad {x|y}"}
    assert _run(_p("a {red|blue}", wildcards)).extra_generation_params == {}  # only with dp_write_raw_template
    none = _run(_p("{a|b}", wildcards, n_iter=3, batch_size=2), no_image_generation=True)
    assert len(none.all_prompts) == 1 and none.batch_size == 1  # the extension still makes one image
    custom = _run(_p("<a|b> c", wildcards, dp_parser_variant_start="<", dp_parser_variant_end=">"))
    assert custom.all_prompts[0] in ("a c", "b c")  # other brackets (options dp_parser_variant_*)
    # what the library's parser rejects (a stray bracket, "%" and "$" it reserves) is used as written, and said
    for text, brackets in (("<a|b> {c|d}", ("<", ">")), ("50% off", ("{", "}")), ("a {b", ("{", "}"))):
        kept = _run(_p(text, wildcards, n_iter=2, dp_parser_variant_start=brackets[0],
                       dp_parser_variant_end=brackets[1]))
        assert kept.all_prompts == [text, text] and kept.n_iter == 2
        assert kept.comments and "used as written" in kept.comments[0]
    # img2img runs whole batches of its init images: a short last batch is refused, "Don't generate images" makes one
    with pytest.raises(ScriptError, match="3 prompts, not a multiple of the batch size 2"):
        _run(_p("{a|b|c}", wildcards, batch_size=2, is_img2img=True), is_combinatorial=True)
    one = _run(_p("{a|b}", wildcards, n_iter=3, batch_size=2, is_img2img=True), no_image_generation=True)
    assert len(one.all_prompts) == 2 and one.batch_size == 2
    with pytest.raises(ScriptError, match="Magic prompt is not available.*Hugging Face hub"):
        _run(_p("x", wildcards), is_magic_prompt=True)
    with pytest.raises(ScriptError, match="feeling lucky is not available.*lexica.art"):
        _run(_p("x", wildcards), is_feeling_lucky=True)
    with pytest.raises(ScriptError, match="Combinatorial batches"):
        _run(_p("x", wildcards), combinatorial_batches="many")


# -- through the API ---------------------------------------------------------------------------------------------------

BODY = {"prompt": "a {red|green|blue} __animals/pets__", "steps": 1, "width": 64, "height": 64, "seed": 5,
        "sampler_name": "Euler", "batch_size": 1, "n_iter": 2}
KEY = "Dynamic Prompts v2.17.1"


@pytest.fixture(scope="module")
def client(tmp_path_factory, models_root):
    root, _ = models_root
    data = tmp_path_factory.mktemp("dynamic-prompts")
    (data / "models").mkdir()
    (data / "models" / "Stable-diffusion").symlink_to(root / "models" / "Stable-diffusion", target_is_directory=True)
    folder = data / "my-wildcards"
    (folder / "animals").mkdir(parents=True)
    (folder / "animals" / "pets.txt").write_text("cat\ndog\n")
    (data / "config.json").write_text(json.dumps({"wildcard_dir": str(folder),
                                                  "sd_model_checkpoint": "tiny-sd15.safetensors"}))
    config = parse(["--nowebui", "--data-dir", str(data), "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as c:
        yield c


def _post(client, **kw):
    r = client.post("/sdapi/v1/txt2img", json={**BODY, **kw})
    assert r.status_code == 200, r.text
    body = r.json()
    return body, json.loads(body["info"])


def test_the_extension_is_loaded_as_a1111_lists_it(client):
    scripts = client.get("/sdapi/v1/scripts").json()
    assert "dynamic prompts v2.17.1" in scripts["txt2img"] and "dynamic prompts v2.17.1" in scripts["img2img"]
    info = next(s for s in client.get("/sdapi/v1/script-info").json() if s["name"] == "dynamic prompts v2.17.1")
    assert info["is_alwayson"] and [a["label"] for a in info["args"]] == LABELS
    options = client.get("/sdapi/v1/options").json()
    assert options["dp_write_raw_template"] is False and options["dp_parser_wildcard_wrap"] == "__"


def test_expanded_prompts_reach_the_images_and_repeat_with_the_seed(client):
    body, info = _post(client)
    prompts = info["all_prompts"]
    assert len(prompts) == 2 and all(re.fullmatch(r"a (red|green|blue) (cat|dog)", p) for p in prompts)
    assert [t.splitlines()[0] for t in info["infotexts"]] == prompts
    assert info["all_seeds"] == [5, 6] and "Template" not in info["infotexts"][0]
    body2, info2 = _post(client)
    assert info2["all_prompts"] == prompts
    assert [hashlib.sha256(base64.b64decode(i)).hexdigest() for i in body2["images"]] == \
        [hashlib.sha256(base64.b64decode(i)).hexdigest() for i in body["images"]]
    # the template in the infotext, as the extension writes it with dp_write_raw_template
    _, info3 = _post(client, n_iter=1, negative_prompt="{blurry|ugly}",
                     override_settings={"dp_write_raw_template": True})
    assert "Template: a {red|green|blue} __animals/pets__" in info3["infotexts"][0]
    assert "Negative Template: {blurry|ugly}," in info3["infotexts"][0]


def test_combinatorial_over_the_api_sets_the_batch_count(client):
    body, info = _post(client, prompt="{red|blue} __animals/pets__", n_iter=1, batch_size=3,
                       alwayson_scripts={KEY: {"args": [True, True]}})
    assert info["all_prompts"] == ["red cat", "red dog", "blue cat", "blue dog"]
    # batch size 3, four prompts: two batches, the second of one image (A1111's p.n_iter = ceil(4 / 3))
    first = info["index_of_first_image"]
    assert info["all_seeds"] == [5, 6, 7, 8] and len(body["images"]) == first + 4
    assert [t.splitlines()[0] for t in info["infotexts"][first:]] == info["all_prompts"]
    # plain text the library cannot parse keeps working, and the job says why
    _, info_pct = _post(client, prompt="50% off", n_iter=1)
    assert info_pct["all_prompts"] == ["50% off"] and "used as written" in info_pct["comments"][0]
    off, info_off = _post(client, n_iter=1, alwayson_scripts={KEY.lower(): {"args": [False]}})
    assert info_off["all_prompts"] == [BODY["prompt"]]
    r = client.post("/sdapi/v1/txt2img", json={**BODY, "alwayson_scripts": {KEY: {"args": [True, False, 1, True]}}})
    assert r.status_code in (400, 422) and "Magic prompt" in r.text


def test_jinja2_templates_see_the_job(wildcards):
    p = _p("{% for c in ['red', 'blue'] %}{% prompt %}a {{ c }} cat, {{ parameters.steps }} steps{% endprompt %}"
           "{% endfor %}", wildcards)
    p.__dict__.update(width=64, height=64, steps=3, cfg_scale=7.0, sampler_name="Euler", sd_model=None)
    _run(p, enable_jinja_templates=True)
    assert p.all_prompts == ["a red cat, 3 steps", "a blue cat, 3 steps"] and p.n_iter == 2
