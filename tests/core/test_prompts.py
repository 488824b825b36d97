"""A1111's prompt language (webui/core/generation/prompts.py): expected values written by hand from A1111 v1.10.1's source and
docstrings (modules/prompt_parser.py, extra_networks.py, styles.py, processing_scripts/comments.py)."""

from __future__ import annotations

import logging

import pytest

from webui.core.generation.prompts import (
    ComposablePart,
    ExtraNetworkParams,
    PromptStyle,
    StyleDatabase,
    apply_styles_to_prompt,
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    merge_prompts,
    parse_extra_networks,
    parse_extra_networks_batch,
    parse_prompt_attention,
    split_composable,
    strip_comments,
)

DOWN = 1 / 1.1  # A1111's square_bracket_multiplier

# ---------------------------------------------------------------------------------------------------------------------
# parse_prompt_attention

ATTENTION = [
    # A1111's docstring examples
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("\\(literal\\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ["a ", 1.0],
            ["house", 1.5730000000000004],
            [" ", 1.1],
            ["on", 1.0],
            [" a ", 1.1],
            ["hill", 0.55],
            [", sun, ", 1.1],
            ["sky", 1.4641000000000006],
            [".", 1.1],
        ],
    ),
    # more of the syntax
    ("", [["", 1.0]]),
    ("[x]", [["x", DOWN]]),
    ("[[x]]", [["x", DOWN * DOWN]]),
    ("((x))", [["x", 1.2100000000000002]]),
    ("(x:1.3)", [["x", 1.3]]),
    ("(x: 1.3 )", [["x", 1.3]]),  # v1.10's re_attention allows spaces around the weight
    ("(x:0)", [["x", 0.0]]),
    ("(x:-1)", [["x", -1.0]]),
    ("(x:abc)", [["x:abc", 1.1]]),  # not a number: ":" is text and ")" closes with 1.1
    ("a:b", [["a:b", 1.0]]),
    ("a]b", [["a]b", 1.0]]),  # unmatched closer is text
    ("a)b", [["a)b", 1.0]]),
    ("\\\\", [["\\", 1.0]]),
    ("\\[x\\)", [["[x)", 1.0]]),
    ("a \\ b", [["a  b", 1.0]]),  # a lone backslash is dropped
    ("[a (b:1.5)]", [["a ", DOWN], ["b", 1.5 * DOWN]]),
    ("(a [b", [["a ", 1.1], ["b", 1.1 * DOWN]]),  # unbalanced: round ones first, then square
    ("(a) (b)", [["a", 1.1], [" ", 1.0], ["b", 1.1]]),
    # BREAK
    ("a BREAK b", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
    ("a\nBREAK\n b", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
    ("BREAK a", [["", 1.0], ["BREAK", -1], ["a", 1.0]]),
    ("aBREAKb BREAKING", [["aBREAKb BREAKING", 1.0]]),
    ("(a BREAK b)", [["a", 1.1], ["BREAK", -1.1], ["b", 1.1]]),  # A1111 multiplies BREAK too
]


@pytest.mark.parametrize("text,expected", ATTENTION)
def test_parse_prompt_attention(text, expected):
    assert parse_prompt_attention(text) == expected


def test_parse_prompt_attention_bad_weight_raises():
    # A1111's float("1.2.3") raises too; the error names the weight
    with pytest.raises(ValueError, match="1.2.3"):
        parse_prompt_attention("(x:1.2.3)")


# ---------------------------------------------------------------------------------------------------------------------
# prompt editing and alternation


def alternating(steps, *texts):
    return [(s, texts[(s - 1) % len(texts)]) for s in range(1, steps + 1)]


SCHEDULES = [
    # A1111's doctests (10 steps)
    ("test", (10,), [(10, "test")]),
    ("a [b:3]", (10,), [(3, "a "), (10, "a b")]),
    ("a [b: 3]", (10,), [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", (10,), [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", (10,), [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", (10,), [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", (10,), [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", (10,), [(10, "a [unbalanced")]),
    ("a [b:.5] c", (10,), [(5, "a  c"), (10, "a b c")]),
    ("((a][:b:c [d:3]", (10,), [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", (10,), alternating(10, "a", "(b:1.1)")),
    ("[fe|]male", (10,), alternating(10, "female", "male")),
    ("[fe|||]male", (10,), alternating(10, "female", "male", "male", "male")),
    ("a [b:.5] c", (10, 10), [(10, "a b c")]),
    ("a [b:1.5] c", (10, 10), [(5, "a  c"), (10, "a b c")]),
    # A1111's doctest says [(5, 'a  c'), (10, 'a {b|d{ c')] ("not handling this right now"), but "|" is in no
    # terminal of the grammar, so A1111's real code falls back to the raw prompt
    ("a [{b|d{:.5] c", (10,), [(10, "a [{b|d{:.5] c")]),
    # from:to:when with a step number or a fraction
    ("a [b:c:10] d", (20,), [(10, "a b d"), (20, "a c d")]),
    ("[b:c:0.25]", (20,), [(5, "b"), (20, "c")]),
    ("[b::5]", (20,), [(5, "b"), (20, "")]),
    ("[b:5]", (20,), [(5, ""), (20, "b")]),
    ("[b:c:5 ]", (20,), [(5, "b"), (20, "c")]),
    ("[b:c:1]", (20,), [(1, "b"), (20, "c")]),
    ("[b:c:1.0]", (20,), [(20, "b")]),  # "1.0" is a fraction: the whole of the steps
    ("[b:c:30]", (20,), [(20, "b")]),  # clamped to the steps
    ("[b:c:0]", (20,), [(20, "c")]),
    ("[b:c:-1]", (20,), [(20, "c")]),
    ("(a [b:c:2])", (4,), [(2, "(a b)"), (4, "(a c)")]),
    ("[[a:b:5]:c:10]", (20,), [(5, "a"), (10, "b"), (20, "c")]),
    ("[a:b:3] [c:d:0.5]", (10,), [(3, "a c"), (5, "b c"), (10, "b d")]),
    # alternation
    ("[a|b]", (3,), [(1, "a"), (2, "b"), (3, "a")]),
    ("[a|b|c] x", (4,), [(1, "a x"), (2, "b x"), (3, "c x"), (4, "a x")]),
    ("[a|[b:c:2]]", (4,), [(1, "a"), (2, "b"), (3, "a"), (4, "c")]),
    # hires pass (base 20, hires 10): integers count on from the base steps, fractions on from 1.0
    ("[a:b:25]", (20, 10), [(5, "a"), (10, "b")]),
    ("[a:b:10]", (20, 10), [(10, "b")]),
    ("[a:b:0.5]", (20, 10), [(10, "b")]),
    ("[a:b:1.5]", (20, 10), [(5, "a"), (10, "b")]),
    ("a [unbalanced", (20, 10), [(10, "a [unbalanced")]),
    # use_old_scheduling: < 1 is a fraction, otherwise a step; the hires pass uses the base schedule
    ("[b:c:1.0]", (20, None, True), [(1, "b"), (20, "c")]),
    ("[b:c:0.25]", (20, None, True), [(5, "b"), (20, "c")]),
    ("[a:b:0.5]", (20, 10, True), [(10, "a"), (20, "b")]),
    ("[a:b:25]", (20, 10, True), [(20, "a")]),
]


@pytest.mark.parametrize("prompt,args,expected", SCHEDULES)
def test_prompt_schedules(prompt, args, expected):
    assert get_learned_conditioning_prompt_schedules([prompt], *args) == [expected]


def test_prompt_schedules_batch_keeps_order_and_duplicates():
    got = get_learned_conditioning_prompt_schedules(["x [a:b:2]", "y", "x [a:b:2]"], 4)
    assert got == [[(2, "x a"), (4, "x b")], [(4, "y")], [(2, "x a"), (4, "x b")]]
    got[0].append((9, "z"))  # each prompt gets its own list
    assert got[2] == [(2, "x a"), (4, "x b")]


# ---------------------------------------------------------------------------------------------------------------------
# AND


def test_multicond_prompt_list():
    res_indexes, flat, indexes = get_multicond_prompt_list(["a cat AND a dog:0.5", "a cat", "x AND y :  -1.5"])
    assert res_indexes == [[(0, 1.0), (1, 0.5)], [(0, 1.0)], [(2, 1.0), (3, -1.5)]]
    assert flat == ["a cat", " a dog", "x", " y"]
    assert indexes == {"a cat": 0, " a dog": 1, "x": 2, " y": 3}


@pytest.mark.parametrize(
    "prompt,expected",
    [
        ("a cat", [ComposablePart("a cat", 1.0)]),
        ("a:1.2", [ComposablePart("a", 1.2)]),
        ("a: 2.", [ComposablePart("a", 2.0)]),
        ("a:.5 ", [ComposablePart("a", 0.5)]),
        ("(a:1.2)", [ComposablePart("(a:1.2)", 1.0)]),  # the weight must end the part
        ("ANDROID AND b", [ComposablePart("ANDROID", 1.0), ComposablePart(" b", 1.0)]),
        ("a AND", [ComposablePart("a", 1.0), ComposablePart("", 1.0)]),
        ("l1\nl2:0.7 AND\nz:+2", [ComposablePart("l1\nl2", 0.7), ComposablePart("\nz", 2.0)]),
        ("a ANDb", [ComposablePart("a ANDb", 1.0)]),
    ],
)
def test_split_composable(prompt, expected):
    assert split_composable(prompt) == expected


# ---------------------------------------------------------------------------------------------------------------------
# extra networks


def params(net: ExtraNetworkParams):
    return net.items, net.positional, dict(net.named)


def test_parse_extra_networks():
    text, nets = parse_extra_networks(
        "a <lora:name:0.8> b <lora:two:0.5:0.3><lyco:x:1> <hypernet:h:0.6>, <lora:x:1:te=0.5> <my_net:q>"
    )
    assert text == "a  b  ,  "
    assert list(nets) == ["lora", "lyco", "hypernet", "my_net"]
    assert [params(n) for n in nets["lora"]] == [
        (("name", "0.8"), ("name", "0.8"), {}),
        (("two", "0.5", "0.3"), ("two", "0.5", "0.3"), {}),
        (("x", "1", "te=0.5"), ("x", "1"), {"te": "0.5"}),
    ]
    assert [params(n) for n in nets["lyco"]] == [(("x", "1"), ("x", "1"), {})]
    assert [params(n) for n in nets["hypernet"]] == [(("h", "0.6"), ("h", "0.6"), {})]
    assert [params(n) for n in nets["my_net"]] == [(("q",), ("q",), {})]


def test_extra_network_named_arguments():
    _, nets = parse_extra_networks("<lora:x:unet=0.2:te=0.5:dyn=8> <lora:a=b=c>")
    assert params(nets["lora"][0]) == (
        ("x", "unet=0.2", "te=0.5", "dyn=8"),
        ("x",),
        {"unet": "0.2", "te": "0.5", "dyn": "8"},
    )
    # split('=', 2) gives three parts: not a key=value pair, so positional
    assert params(nets["lora"][1]) == (("a=b=c",), ("a=b=c",), {})
    # equality is on items only, as A1111's __eq__
    assert nets["lora"][0] == ExtraNetworkParams(items=("x", "unet=0.2", "te=0.5", "dyn=8"), positional=(), named={})
    # built from items alone, the split is made as A1111's constructor does
    built = ExtraNetworkParams(items=["n", "0.7", "te=1"])
    assert (built.items, built.positional, dict(built.named)) == (("n", "0.7", "te=1"), ("n", "0.7"), {"te": "1"})
    assert hash(built) == hash(ExtraNetworkParams(items=("n", "0.7", "te=1")))


@pytest.mark.parametrize("prompt", ["<lora:>", "<lo-ra:x>", "<x>", "lora:x:1", "<:x>"])
def test_not_extra_network_tags(prompt):
    assert parse_extra_networks(prompt) == (prompt, {})


def test_parse_extra_networks_batch_uses_first_prompt():
    prompts, nets = parse_extra_networks_batch(["a <lora:x:1>", "b <lora:y:0.5> <hypernet:h>"])
    assert prompts == ["a ", "b  "]
    assert list(nets) == ["lora"]
    assert [n.items for n in nets["lora"]] == [("x", "1")]
    assert parse_extra_networks_batch([]) == ([], {})


# ---------------------------------------------------------------------------------------------------------------------
# comments


@pytest.mark.parametrize(
    "text,expected",
    [
        ("a cat", "a cat"),
        ("a cat\n# comment\nb", "a cat\nb"),
        ("a cat # comment\nb", "a cat \nb"),
        ("a (b:1.2) # note", "a (b:1.2) \n"),
        ("# only", "\n"),
        ("#a\n#b\nc", "\n\nc"),  # the first pass cannot match two adjacent lines; the second pass takes the rest
        ("a\n#b\n#c\nd", "a\n\nd"),
    ],
)
def test_strip_comments(text, expected):
    assert strip_comments(text) == expected


# ---------------------------------------------------------------------------------------------------------------------
# styles

STYLES_CSV = (
    "\ufeffname,prompt,negative_prompt\r\n"
    'Photo,"photo of {prompt}, 8k",blurry\r\n'
    'Cinematic,"cinematic, film grain","cartoon, {prompt}"\r\n'
    "# comment,x,y\r\n"
    "Empty,,\r\n"
    "Spaced, spaced prompt , neg\r\n"
    "Short\r\n"
    "Long,a,b,c\r\n"
)


@pytest.fixture
def styles_db(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text(STYLES_CSV, encoding="utf-8", newline="")
    return StyleDatabase([str(path)]), str(path)


def test_styles_read(styles_db, caplog):
    db, path = styles_db
    with caplog.at_level(logging.WARNING, logger="webui.core.generation.prompts"):
        styles = db.list()
    assert styles == [
        PromptStyle("Photo", "photo of {prompt}, 8k", "blurry", path),
        PromptStyle("Cinematic", "cinematic, film grain", "cartoon, {prompt}", path),
        PromptStyle("Empty", "", "", path),
        PromptStyle("Spaced", "spaced prompt ", "neg", path),  # skipinitialspace, as A1111
        PromptStyle("Long", "a", "b", path),  # extra fields ignored, as A1111
    ]
    assert "line 7" in caplog.text and "row skipped" in caplog.text  # "Short" has too few fields
    assert db.get("Photo").prompt == "photo of {prompt}, 8k"
    assert db.get("nope") is None
    assert db.unknown(["Photo", "nope", "Empty", "also"]) == ["nope", "also"]


def test_styles_apply(styles_db):
    db, _ = styles_db
    assert db.apply_styles_to_prompt("a cat", ["Photo"]) == "photo of a cat, 8k"
    assert db.apply_styles_to_prompt("a cat", ["Cinematic"]) == "a cat, cinematic, film grain"
    assert db.apply_styles_to_prompt("a cat", ["Photo", "Cinematic"]) == "photo of a cat, 8k, cinematic, film grain"
    assert db.apply_styles_to_prompt("a cat", ["Cinematic", "Photo"]) == "photo of a cat, cinematic, film grain, 8k"
    assert db.apply_styles_to_prompt("", ["Cinematic"]) == "cinematic, film grain"
    assert db.apply_styles_to_prompt("", ["Photo"]) == "photo of , 8k"
    assert db.apply_styles_to_prompt("x", ["Spaced"]) == "x, spaced prompt"
    # unknown and empty styles act as an empty style: the prompt is only stripped
    assert db.apply_styles_to_prompt("  a cat  ", ["nope"]) == "a cat"
    assert db.apply_styles_to_prompt("  a cat  ", ["Empty"]) == "a cat"
    assert db.apply_styles_to_prompt("  a cat  ", []) == "  a cat  "
    assert db.apply_negative_styles_to_prompt("ugly", ["Photo", "Cinematic"]) == "cartoon, ugly, blurry"
    assert db.apply_negative_styles_to_prompt("", ["Photo"]) == "blurry"


def test_merge_prompts_functions():
    assert merge_prompts("{prompt} {prompt}!", " x ") == " x   x !"
    assert merge_prompts(" s ", " p ") == "p, s"
    assert merge_prompts("", "") == ""
    assert apply_styles_to_prompt("p", ["a", "b, {prompt}"]) == "b, p, a"


def test_extract_styles_from_prompt(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(
        'name,prompt,negative_prompt\nPhoto,"photo of {prompt}, 8k",blurry\n'
        'Cinematic,"cinematic, film grain","cartoon, {prompt}"\nEmpty,,\n',
        encoding="utf-8",
    )
    db = StyleDatabase([path])
    assert db.extract_styles_from_prompt("photo of a cat, 8k, cinematic, film grain", "cartoon, ugly, blurry") == (
        ["Photo", "Cinematic"],
        "a cat",
        "ugly",
    )
    assert db.extract_styles_from_prompt("a dog", "bad") == ([], "a dog", "bad")


def test_styles_missing_file_and_old_format(tmp_path):
    assert StyleDatabase([tmp_path / "none.csv"]).list() == []
    old = tmp_path / "old.csv"
    old.write_text("name,text\nOld,old style\n", encoding="utf-8")
    assert StyleDatabase([old]).list() == [PromptStyle("Old", "old style", "", str(old))]
    bad = tmp_path / "bad.csv"
    bad.write_text("title,body\nA,b\n", encoding="utf-8")
    assert StyleDatabase([bad]).list() == []


def test_styles_several_files_and_patterns(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "more" / "b.csv"
    b.parent.mkdir()
    a.write_text("name,prompt,negative_prompt\nX,x,\nY,y1,\n", encoding="utf-8")
    b.write_text("name,prompt,negative_prompt\nY,y2,n2\nZ,z,\n", encoding="utf-8")
    db = StyleDatabase([a, tmp_path / "more" / "*.csv"])
    assert db.list() == [
        PromptStyle("X", "x", "", str(a)),
        PromptStyle("Y", "y2", "n2", str(b)),  # a later file replaces the style in its first position
        PromptStyle("Z", "z", "", str(b)),
    ]


def test_styles_reload_sees_changes(tmp_path):
    path = tmp_path / "styles.csv"
    db = StyleDatabase([path])
    assert db.list() == []
    path.write_text("name,prompt,negative_prompt\nA,a,\n", encoding="utf-8")
    assert db.list() == []  # loaded once, on first use
    db.reload()
    assert [s.name for s in db.list()] == ["A"]


def test_styles_save_round_trip(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text("name,prompt,negative_prompt\nA,a,\n", encoding="utf-8")
    db = StyleDatabase([path])
    db.set_style("Q", 'say "hi", ok', "日本語")
    db.set_style("Ü, n", "line1\nline2", "{prompt}, ßad")
    db.set_style("A", "a2", "na")
    db.save_styles()

    assert path.read_bytes().decode("utf-8") == (
        "\ufeffname,prompt,negative_prompt\r\n"
        "A,a2,na\r\n"
        'Q,"say ""hi"", ok",日本語\r\n'
        '"Ü, n","line1\nline2","{prompt}, ßad"\r\n'
    )
    assert (tmp_path / "styles.csv.bak").read_text(encoding="utf-8") == "name,prompt,negative_prompt\nA,a,\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["styles.csv", "styles.csv.bak"]  # no temp file left

    again = StyleDatabase([path])
    assert again.list() == [
        PromptStyle("A", "a2", "na", str(path)),
        PromptStyle("Q", 'say "hi", ok', "日本語", str(path)),
        PromptStyle("Ü, n", "line1\nline2", "{prompt}, ßad", str(path)),
    ]
    assert again.delete_style("Q") is True
    assert again.delete_style("Q") is False
    again.save_styles()
    assert [s.name for s in StyleDatabase([path]).list()] == ["A", "Ü, n"]


def test_styles_save_to_their_files_and_to_one_path(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("name,prompt,negative_prompt\nX,x,\n", encoding="utf-8")
    b.write_text("name,prompt,negative_prompt\nZ,z,\n", encoding="utf-8")
    db = StyleDatabase([a, b])
    db.set_style("Z", "z2", "")  # keeps its file
    db.set_style("W", "w", "")  # new: the default (first) file
    db.save_styles()
    assert a.read_bytes().decode("utf-8-sig") == "name,prompt,negative_prompt\nX,x,\nW,w,\n".replace("\n", "\r\n")
    assert b.read_bytes().decode("utf-8-sig") == "name,prompt,negative_prompt\nZ,z2,\n".replace("\n", "\r\n")
    assert db.get("W").path == str(a)

    one = tmp_path / "sub" / "all.csv"
    db.save_styles(one)
    expected = "name,prompt,negative_prompt\r\nX,x,\r\nZ,z2,\r\nW,w,\r\n"
    assert one.read_bytes().decode("utf-8-sig") == expected
