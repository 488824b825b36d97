"""A1111's prompt language as pure functions: attention, prompt editing, alternation, AND, extra networks, comments,
styles.

Reproduces, from A1111 v1.10.1:

- ``modules/prompt_parser.py``: ``parse_prompt_attention`` (``(x)``, ``[x]``, ``(x:1.3)``, escapes, ``BREAK``),
  ``get_learned_conditioning_prompt_schedules`` (``[from:to:when]``, ``[a|b]``, with the same lark grammar and the
  same fallback to the raw prompt when the grammar fails) and ``get_multicond_prompt_list`` (``AND`` with ``:weight``);
- ``modules/extra_networks.py``: ``ExtraNetworkParams``, ``parse_prompt`` and ``parse_prompts`` (``<lora:name:0.8>``);
- ``modules/processing_scripts/comments.py``: ``strip_comments`` (option ``enable_prompt_comments``);
- ``modules/styles.py``: ``PromptStyle``, ``merge_prompts``, ``apply_styles_to_prompt``, ``StyleDatabase`` (several
  styles files, wildcards, ``extract_styles_from_prompt``).

No torch here: these turn strings into structures that ``conditioning.py`` and ``networks.py`` consume.
"""

from __future__ import annotations

import csv
import functools
import glob
import logging
import os
import re
import threading
import types
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

import lark

from webui.core.io.files import atomic_write

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# attention: prompt_parser.parse_prompt_attention

# The tokens of A1111's emphasis syntax, in A1111's order of alternatives (the order decides which one matches).
re_attention = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.X,
)

re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)

ROUND_BRACKET_MULTIPLIER = 1.1
SQUARE_BRACKET_MULTIPLIER = 1 / 1.1


def parse_prompt_attention(text: str) -> list[list]:
    """Split a prompt into ``[text, weight]`` pairs, as A1111's ``prompt_parser.parse_prompt_attention``.

    ``(abc)`` multiplies by 1.1, ``[abc]`` divides by 1.1, ``(abc:3.12)`` multiplies by 3.12; ``\\(``, ``\\)``,
    ``\\[``, ``\\]``, ``\\\\`` are literal characters; unbalanced brackets apply to the end of the prompt; ``BREAK``
    becomes ``["BREAK", -1]`` (and, as in A1111, is itself multiplied when it sits inside brackets); neighbouring
    pieces of exactly equal weight are merged; an empty prompt gives ``[["", 1.0]]``.
    """
    res: list[list] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start_position: int, multiplier: float) -> None:
        for p in range(start_position, len(res)):
            res[p][1] *= multiplier

    for m in re_attention.finditer(text):
        token = m.group(0)
        weight = m.group(1)

        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_brackets.append(len(res))
        elif token == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            try:
                value = float(weight)
            except ValueError:
                # A1111 raises here too (float() of e.g. "1.2.3"); say where it came from.
                raise ValueError(f"invalid attention weight {weight!r} in prompt {text!r}") from None
            multiply_range(round_brackets.pop(), value)
        elif token == ")" and round_brackets:
            multiply_range(round_brackets.pop(), ROUND_BRACKET_MULTIPLIER)
        elif token == "]" and square_brackets:
            multiply_range(square_brackets.pop(), SQUARE_BRACKET_MULTIPLIER)
        else:
            for i, part in enumerate(re_break.split(token)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])

    for pos in round_brackets:
        multiply_range(pos, ROUND_BRACKET_MULTIPLIER)
    for pos in square_brackets:
        multiply_range(pos, SQUARE_BRACKET_MULTIPLIER)

    if not res:
        res = [["", 1.0]]

    # merge runs of identical weights (exact float equality, as A1111)
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1

    return res


# ---------------------------------------------------------------------------------------------------------------------
# prompt editing and alternation: prompt_parser.get_learned_conditioning_prompt_schedules

# A1111's grammar, verbatim: which prompts parse, and how ambiguities resolve, is part of the prompt language.
# The grammar is ambiguous for prompts with stray brackets ("x (y) [a:b:3])"): with lark 1.1.2, which A1111 pins, the
# Earley resolution of those depends on Python's hash seed and changes from run to run; lark 1.3 resolves them the
# same way every time. Checked: this module gives the same schedules as A1111's own function under the same lark.
SCHEDULE_GRAMMAR = r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
        | "(" prompt ":" prompt ")"
        | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""


@functools.cache
def _schedule_parser() -> lark.Lark:
    """The grammar compiled once, on first use (A1111 builds it at import; we do no work at import time).

    Default options as A1111: Earley parser, ``maybe_placeholders`` so that ``[prompt ":"]`` yields None when absent.
    """
    return lark.Lark(SCHEDULE_GRAMMAR)


def _scheduled_when(
    number: str, steps: int, int_offset: int, flt_offset: float, use_old_scheduling: bool
) -> int:
    """The step at which ``[from:to:when]`` switches, as A1111's ``CollectSteps.scheduled``.

    New scheduling: a number with a "." is a fraction of the steps of this pass (for the hires pass, of the
    hires steps, counted from 1.0), one without is a step number (for the hires pass, counted after the base steps).
    Old scheduling (option ``use_old_scheduling``): values below 1 are fractions, others step numbers.
    """
    v = float(number)
    if use_old_scheduling:
        v = v * steps if v < 1 else v
    elif "." in number:
        v = (v - flt_offset) * steps
    else:
        v = v - int_offset
    return min(steps, int(v))


class _AtStep(lark.Transformer):
    """The prompt text in effect at one sampling step (A1111's ``AtStep``, returning strings instead of generators)."""

    def __init__(self, step: int, when_of) -> None:
        super().__init__()
        self.step = step
        self.when_of = when_of

    def scheduled(self, args):
        before, after, _, number, _ = args
        return (before or "") if self.step <= self.when_of(number) else after

    def alternate(self, args):
        options = [arg or "" for arg in args]
        return options[(self.step - 1) % len(options)]

    def plain(self, args):
        return args[0].value

    def __default__(self, data, children, meta):
        # prompt, emphasized (which keeps its bracket tokens) and start: the concatenation of what they hold
        return "".join(str(child) for child in children if child is not None)


def _collect_steps(tree: lark.Tree, steps: int, when_of) -> list[int]:
    """The steps at which the prompt text may change, as A1111's ``collect_steps``: the switch points >= 1, every
    step when there is an alternation, and the last step."""
    res = {steps}
    for node in tree.iter_subtrees():
        if node.data == "scheduled":
            when = when_of(node.children[-2])
            if when >= 1:
                res.add(when)
        elif node.data == "alternate":
            res.update(range(1, steps + 1))
    return sorted(res)


def get_learned_conditioning_prompt_schedules(
    prompts: Sequence[str],
    base_steps: int,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
) -> list[list[tuple[int, str]]]:
    """For each prompt, ``[(end_at_step, text), ...]``: the text in effect up to and including each step.

    As A1111's ``prompt_parser.get_learned_conditioning_prompt_schedules``: ``[from:to:when]``, ``[to:when]``,
    ``[from::when]``, ``[a|b|c]`` and their nestings; with ``hires_steps`` the schedule is for the hires pass (steps
    counted as described in ``_scheduled_when``) unless ``use_old_scheduling``. A prompt the grammar cannot parse is
    used as it is for all steps.

    >>> get_learned_conditioning_prompt_schedules(["a [b:c:10] d"], 20)
    [[(10, 'a b d'), (20, 'a c d')]]
    """
    if hires_steps is None or use_old_scheduling:
        int_offset, flt_offset, steps = 0, 0.0, base_steps
    else:
        int_offset, flt_offset, steps = base_steps, 1.0, hires_steps

    def when_of(number) -> int:
        return _scheduled_when(str(number), steps, int_offset, flt_offset, use_old_scheduling)

    def get_schedule(prompt: str) -> list[tuple[int, str]]:
        try:
            tree = _schedule_parser().parse(prompt)
        except lark.exceptions.LarkError:
            return [(steps, prompt)]
        return [(t, _AtStep(t, when_of).transform(tree)) for t in _collect_steps(tree, steps, when_of)]

    cache: dict[str, list[tuple[int, str]]] = {}
    out = []
    for prompt in prompts:
        if prompt not in cache:
            cache[prompt] = get_schedule(prompt)
        out.append(list(cache[prompt]))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# composable diffusion: prompt_parser.get_multicond_prompt_list

re_AND = re.compile(r"\bAND\b")
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


@dataclass(frozen=True)
class ComposablePart:
    """One ``AND`` part of a prompt: its text (trailing ``:weight`` and whitespace removed) and its weight."""

    text: str
    weight: float


def split_composable(prompt: str) -> list[ComposablePart]:
    """The ``AND`` parts of one prompt, by A1111's ``re_AND`` / ``re_weight`` (``a cat AND a dog:0.5``)."""
    parts = []
    for subprompt in re_AND.split(prompt):
        match = re_weight.search(subprompt)
        text, weight = match.groups() if match is not None else (subprompt, None)
        parts.append(ComposablePart(text=text, weight=float(weight) if weight is not None else 1.0))
    return parts


def get_multicond_prompt_list(
    prompts: Sequence[str],
) -> tuple[list[list[tuple[int, float]]], list[str], dict[str, int]]:
    """A1111's ``get_multicond_prompt_list``: per prompt, ``(index into prompt_flat_list, weight)`` for each ``AND``
    part; equal part texts share one index across the whole batch."""
    res_indexes: list[list[tuple[int, float]]] = []
    prompt_flat_list: list[str] = []
    prompt_indexes: dict[str, int] = {}

    for prompt in prompts:
        indexes = []
        for part in split_composable(prompt):
            index = prompt_indexes.get(part.text)
            if index is None:
                index = len(prompt_flat_list)
                prompt_flat_list.append(part.text)
                prompt_indexes[part.text] = index
            indexes.append((index, part.weight))
        res_indexes.append(indexes)

    return res_indexes, prompt_flat_list, prompt_indexes


# ---------------------------------------------------------------------------------------------------------------------
# extra networks: extra_networks.parse_prompt / parse_prompts

re_extra_net = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class ExtraNetworkParams:
    """The arguments of one ``<name:arg1:arg2:...>`` tag, as A1111's ``extra_networks.ExtraNetworkParams``.

    ``positional`` are the items without exactly one "=" (``name``, ``0.8``), ``named`` the ``key=value`` ones
    (``te=0.5``); both are derived from ``items`` when not given (``ExtraNetworkParams(items=("x", "1"))``, as
    A1111's constructor). Equality and hashing look at ``items`` only, as A1111's ``__eq__``.
    """

    items: tuple[str, ...]
    positional: tuple[str, ...] | None = field(default=None, compare=False)
    named: Mapping[str, str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        items = tuple(self.items)
        positional, named = self.positional, self.named
        if positional is None and named is None:
            positional, named = [], {}
            for item in items:
                parts = item.split("=", 2)
                if len(parts) == 2:
                    named[parts[0]] = parts[1]
                else:
                    positional.append(item)
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "positional", tuple(positional or ()))
        object.__setattr__(self, "named", types.MappingProxyType(dict(named or {})))

    @classmethod
    def from_items(cls, items: Iterable[str]) -> ExtraNetworkParams:
        return cls(items=tuple(items))


def parse_extra_networks(prompt: str) -> tuple[str, dict[str, list[ExtraNetworkParams]]]:
    """Remove every ``<type:arg:...>`` tag from the prompt and group their arguments by type (``lora``, ``lyco``,
    ``hypernet``, or any other word), in prompt order; A1111's ``extra_networks.parse_prompt``."""
    res: dict[str, list[ExtraNetworkParams]] = {}

    def found(m: re.Match) -> str:
        res.setdefault(m.group(1), []).append(ExtraNetworkParams.from_items(m.group(2).split(":")))
        return ""

    return re_extra_net.sub(found, prompt), res


def parse_extra_networks_batch(prompts: Sequence[str]) -> tuple[list[str], dict[str, list[ExtraNetworkParams]]]:
    """A1111's ``extra_networks.parse_prompts``: tags are removed from every prompt, but the networks applied to the
    batch are those of the first prompt only (an empty batch gives no networks, where A1111 gives None)."""
    cleaned = []
    extra_data: dict[str, list[ExtraNetworkParams]] | None = None
    for prompt in prompts:
        text, data = parse_extra_networks(prompt)
        if extra_data is None:
            extra_data = data
        cleaned.append(text)
    return cleaned, extra_data if extra_data is not None else {}


# ---------------------------------------------------------------------------------------------------------------------
# comments: processing_scripts/comments.py


def strip_comments(text: str) -> str:
    """Remove ``#`` comments up to the end of their line, as A1111's ``comments.strip_comments`` (applied to the
    prompts when the option ``enable_prompt_comments`` is on, its default)."""
    text = re.sub("(^|\n)#[^\n]*(\n|$)", "\n", text)  # whole-line comment
    text = re.sub("#[^\n]*(\n|$)", "\n", text)  # comment in the middle of a line
    return text


# ---------------------------------------------------------------------------------------------------------------------
# styles: modules/styles.py


@dataclass(frozen=True)
class PromptStyle:
    """A row of styles.csv; ``path`` is the file it came from (None for a style not yet saved)."""

    name: str
    prompt: str
    negative_prompt: str
    path: str | None = None


STYLE_FIELDS = ("name", "prompt", "negative_prompt")
NO_STYLE = PromptStyle("None", "", "", None)


def merge_prompts(style_prompt: str, prompt: str) -> str:
    """A1111 ``styles.merge_prompts``: ``{prompt}`` in the style is replaced by the prompt; otherwise the stripped
    prompt and stripped style are joined with ", ", leaving out whichever is empty."""
    if "{prompt}" in style_prompt:
        return style_prompt.replace("{prompt}", prompt)
    return ", ".join(filter(None, (prompt.strip(), style_prompt.strip())))


def apply_styles_to_prompt(prompt: str, style_prompts: Iterable[str]) -> str:
    """A1111 ``styles.apply_styles_to_prompt``: merge each style text into the prompt, in order."""
    for style_prompt in style_prompts:
        prompt = merge_prompts(style_prompt, prompt)
    return prompt


def extract_style_text_from_prompt(style_text: str, prompt: str) -> tuple[bool, str]:
    """A1111 ``styles.extract_style_text_from_prompt``: undo ``merge_prompts`` when the prompt carries the style.

    ``("masterpiece", "1girl, masterpiece")`` -> ``(True, "1girl")``; ``("masterpiece, {prompt}", "masterpiece,
    1girl")`` -> ``(True, "1girl")``; no match -> ``(False, prompt)``. A style with more than one ``{prompt}`` never
    matches (A1111 raises there).
    """
    stripped_prompt = prompt.strip()
    stripped_style_text = style_text.strip()

    if "{prompt}" in stripped_style_text:
        pieces = stripped_style_text.split("{prompt}", 2)
        if len(pieces) != 2:
            return False, prompt
        left, right = pieces
        if stripped_prompt.startswith(left) and stripped_prompt.endswith(right):
            return True, stripped_prompt[len(left) : len(stripped_prompt) - len(right)]
    elif stripped_prompt.endswith(stripped_style_text):
        prompt = stripped_prompt[: len(stripped_prompt) - len(stripped_style_text)]
        if prompt.endswith(", "):
            prompt = prompt[:-2]
        return True, prompt

    return False, prompt


def extract_original_prompts(style: PromptStyle, prompt: str, negative_prompt: str) -> tuple[bool, str, str]:
    """A1111 ``styles.extract_original_prompts``: both texts must carry the style for it to match."""
    if not style.prompt and not style.negative_prompt:
        return False, prompt, negative_prompt

    match_positive, extracted_positive = extract_style_text_from_prompt(style.prompt, prompt)
    if not match_positive:
        return False, prompt, negative_prompt

    match_negative, extracted_negative = extract_style_text_from_prompt(style.negative_prompt, negative_prompt)
    if not match_negative:
        return False, prompt, negative_prompt

    return True, extracted_positive, extracted_negative


def _is_pattern(path: str) -> bool:
    name = os.path.basename(path)
    return "*" in name or "?" in name


class StyleDatabase:
    """A1111's ``styles.StyleDatabase`` over one or more styles CSV files (``--styles-file``, repeatable; a file
    name may be a ``*``/``?`` pattern).

    Files are read on first use or on ``reload()``, never in ``__init__``. Styles keep A1111's order: files in the
    order given, rows in file order; a name seen again replaces the style in its first position. A missing file is
    empty. Deviation: A1111's list dividers (``---- STYLES ----`` entries with no prompt, added when several files
    are loaded) are not styles here.
    """

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        if not paths:
            raise ValueError("StyleDatabase needs at least one styles file path")
        self.paths: tuple[str, ...] = tuple(os.fspath(p) for p in paths)
        self._lock = threading.RLock()
        self._styles: dict[str, PromptStyle] | None = None
        self._default_path: str | None = None

    # -- loading ----------------------------------------------------------------------------------------------------

    def _resolve_files(self) -> tuple[str, list[str]]:
        """(default path, files to read), as A1111's ``__init__`` and ``reload``: a pattern as the first path makes
        its first match (or ``folder/styles.csv``) the default file, read first."""
        patterns = list(self.paths)
        first = patterns[0]
        if _is_pattern(first):
            matches = sorted(glob.glob(first))
            default = matches[0] if matches else os.path.join(os.path.dirname(first), "styles.csv")
            patterns.insert(0, default)
        else:
            default = first

        files: list[str] = []
        for pattern in patterns:
            found = sorted(glob.glob(pattern)) if _is_pattern(pattern) else [pattern]
            for f in found:
                if f not in files:
                    files.append(f)
        return default, files

    def reload(self) -> None:
        """Forget the loaded styles and read the files again."""
        with self._lock:
            default, files = self._resolve_files()
            styles: dict[str, PromptStyle] = {}
            for path in files:
                if os.path.isfile(path):
                    self._load_from_csv(path, styles)
            self._default_path = default
            self._styles = styles

    @staticmethod
    def _load_from_csv(path: str, styles: dict[str, PromptStyle]) -> None:
        """A1111 ``load_from_csv``: utf-8 with or without BOM, ``skipinitialspace``; rows whose name starts with
        "#" are comments; the old ``name,text`` format is read too. A row with missing fields is skipped with a
        warning (A1111 would load None and fail when the style is applied); an unreadable file is reported and the
        rows read before the error are kept, as A1111."""
        try:
            with open(path, encoding="utf-8-sig", newline="") as file:
                reader = csv.DictReader(file, skipinitialspace=True)
                fieldnames = reader.fieldnames or []
                if "name" not in fieldnames or ("prompt" not in fieldnames and "text" not in fieldnames):
                    if fieldnames:
                        log.warning("styles file %s has no name/prompt columns (header %r); ignored", path, fieldnames)
                    return
                prompt_key = "prompt" if "prompt" in fieldnames else "text"
                for row in reader:
                    name = row.get("name")
                    if not row or (name is not None and name.startswith("#")):
                        continue
                    prompt = row.get(prompt_key)
                    negative_prompt = row.get("negative_prompt", "")
                    if name is None or prompt is None or negative_prompt is None:
                        log.warning("styles file %s, line %d: too few fields, row skipped", path, reader.line_num)
                        continue
                    styles[name] = PromptStyle(name, prompt, negative_prompt, path)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            log.warning("error loading styles from %s: %s", path, e)

    def _loaded(self) -> dict[str, PromptStyle]:
        with self._lock:
            if self._styles is None:
                self.reload()
            return self._styles

    # -- queries ----------------------------------------------------------------------------------------------------

    def list(self) -> list[PromptStyle]:
        """All styles, in A1111's order."""
        return list(self._loaded().values())

    def get(self, name: str) -> PromptStyle | None:
        return self._loaded().get(name)

    def unknown(self, styles: Iterable[str]) -> list[str]:
        """The names in ``styles`` that are not styles here (A1111 silently treats them as empty styles)."""
        known = self._loaded()
        return [name for name in styles if name not in known]

    def apply_styles_to_prompt(self, prompt: str, styles: Iterable[str]) -> str:
        """A1111 ``StyleDatabase.apply_styles_to_prompt``. An unknown name acts as an empty style, so it still
        strips the prompt, as in A1111."""
        known = self._loaded()
        return apply_styles_to_prompt(prompt, [known.get(x, NO_STYLE).prompt for x in styles])

    def apply_negative_styles_to_prompt(self, prompt: str, styles: Iterable[str]) -> str:
        """A1111 ``StyleDatabase.apply_negative_styles_to_prompt``."""
        known = self._loaded()
        return apply_styles_to_prompt(prompt, [known.get(x, NO_STYLE).negative_prompt for x in styles])

    def extract_styles_from_prompt(self, prompt: str, negative_prompt: str) -> tuple[list[str], str, str]:
        """A1111 ``StyleDatabase.extract_styles_from_prompt``: the styles whose texts the prompts carry (in the order
        they were applied) and the prompts without them; used when pasting infotext (option ``infotext_styles``)."""
        extracted = []
        applicable = self.list()
        while True:
            found = None
            for style in applicable:
                is_match, new_prompt, new_negative = extract_original_prompts(style, prompt, negative_prompt)
                if is_match:
                    found = style
                    prompt, negative_prompt = new_prompt, new_negative
                    break
            if found is None:
                break
            applicable.remove(found)
            extracted.append(found.name)
        return list(reversed(extracted)), prompt, negative_prompt

    # -- editing and saving -----------------------------------------------------------------------------------------

    def set_style(self, name: str, prompt: str, negative_prompt: str) -> PromptStyle:
        """Add or replace a style in memory, keeping the file of the style it replaces (A1111's style editor,
        ``ui_prompt_styles.save_style``). ``save_styles()`` writes it."""
        with self._lock:
            styles = self._loaded()
            existing = styles.get(name)
            style = PromptStyle(name, prompt, negative_prompt, existing.path if existing is not None else None)
            styles[name] = style
            return style

    def delete_style(self, name: str) -> bool:
        """Remove a style in memory (``ui_prompt_styles.delete_style``); True when it existed."""
        with self._lock:
            return self._loaded().pop(name, None) is not None

    def save_styles(self, path: str | os.PathLike | None = None) -> None:
        """Write styles as A1111's CSV (utf-8 with BOM, header ``name,prompt,negative_prompt``, Excel quoting).

        Without ``path``, as A1111 v1.10: every style goes back to the file it came from, styles without a file go
        to the default (first) file, which is written even when it has no styles. With ``path``: all styles go to
        that one file (A1111 before several styles files). Each file is written to a temporary file and moved over
        the old one (``atomic_write``); the old one is kept as ``<file>.bak``, as A1111.
        """
        with self._lock:
            styles = self._loaded()
            if path is not None:
                self._write_csv(os.fspath(path), list(styles.values()))
                return

            default = self._default_path
            for name, style in list(styles.items()):
                if not style.path:
                    styles[name] = replace(style, path=default)
            targets = [default] + [s.path for s in styles.values()]
            for target in dict.fromkeys(targets):
                self._write_csv(target, [s for s in styles.values() if s.path == target])

    @staticmethod
    def _write_csv(path: str, styles: Sequence[PromptStyle]) -> None:
        def write(file) -> None:
            writer = csv.DictWriter(file, fieldnames=STYLE_FIELDS)
            writer.writeheader()
            for style in styles:
                writer.writerow({"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt})

        atomic_write(path, write, encoding="utf-8-sig", newline="", keep_backup=True)
