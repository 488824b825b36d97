"""A1111 ``scripts/prompts_from_file.py`` (v1.10.1): "Prompts from file or textbox", on txt2img and img2img.

One job per non-empty line: a plain line is the prompt; a line with ``--`` is A1111's command-line syntax
(``--prompt "a cat" --negative_prompt "dog" --steps 10 --seed 5 --sampler_name "Euler a" --width 64 ...``), parsed
with ``shlex`` and A1111's option table (``prompt_tags``) and type rules (int, float, ``true`` for booleans, anything
else false; ``--prompt`` / ``--negative_prompt`` take every word up to the next ``--option``).

Differences from A1111, on purpose:
- A line that starts with ``--`` and does not parse (an unknown option, a missing value, a bad number, an unknown
  sampler or checkpoint) is a ScriptError (the API answers 4xx) naming the script, the line and the valid options,
  raised for every line before any image is made. A1111 logs the error and uses the whole line as the prompt. A line
  with ``--`` elsewhere ("a -- b") is a plain prompt, which is what A1111 ends up doing for it too.
- ``prompt_txt`` may also be the uploaded file's bytes (A1111's "Upload prompt inputs" control is not one of the
  script's positional args: its upload fills the textbox; bytes are read the same way, UTF-8, errors ignored).
- ``--styles`` is one style name (A1111 sets the string itself, which its processing then reads character by
  character); ``--outpath_samples`` / ``--outpath_grids`` go through the options ``outdir_samples`` /
  ``outdir_grids``; ``--sampler_index`` picks the sampler at that index of the sampler list.
"""

from __future__ import annotations

import random
import shlex

from webui.plugins.scripts import Script, ScriptArg, ScriptError

TITLE = "Prompts from file or textbox"


def process_string_tag(tag):
    return tag


def process_int_tag(tag):
    return int(tag)


def process_float_tag(tag):
    return float(tag)


def process_boolean_tag(tag):
    return True if (tag == "true") else False


def process_model_tag(tag):
    """A1111 resolves the checkpoint here (get_closet_checkpoint_match); the script checks it against the registry
    when it runs (``_check_model``), where the registry is known."""
    return tag


#: A1111's option table, in its order.
prompt_tags = {
    "sd_model": process_model_tag,
    "outpath_samples": process_string_tag,
    "outpath_grids": process_string_tag,
    "prompt_for_display": process_string_tag,
    "prompt": process_string_tag,
    "negative_prompt": process_string_tag,
    "styles": process_string_tag,
    "seed": process_int_tag,
    "subseed_strength": process_float_tag,
    "subseed": process_int_tag,
    "seed_resize_from_h": process_int_tag,
    "seed_resize_from_w": process_int_tag,
    "sampler_index": process_int_tag,
    "sampler_name": process_string_tag,
    "batch_size": process_int_tag,
    "n_iter": process_int_tag,
    "steps": process_int_tag,
    "cfg_scale": process_float_tag,
    "width": process_int_tag,
    "height": process_int_tag,
    "restore_faces": process_boolean_tag,
    "tiling": process_boolean_tag,
    "do_not_save_samples": process_boolean_tag,
    "do_not_save_grid": process_boolean_tag,
}


def samplers_map() -> dict[str, str]:
    """A1111 ``sd_samplers.samplers_map``: lower-cased name and aliases -> sampler name."""
    from webui.core.generation.samplers import SAMPLERS

    out: dict[str, str] = {}
    for s in SAMPLERS:
        out[s.name.lower()] = s.name
        for alias in s.aliases:
            out[alias.lower()] = s.name
    return out


def cmdargs(line: str) -> dict:
    """A1111 ``cmdargs``: one line's options as {attribute: value}. Raises ValueError with A1111's messages
    ('must start with "--"', 'missing argument for command line option', 'unknown commandline option') plus the
    valid choices where there are some."""
    args = shlex.split(line)
    pos = 0
    res: dict = {}
    while pos < len(args):
        arg = args[pos]
        if not arg.startswith("--"):
            raise ValueError(f'must start with "--": {arg}')
        if not pos + 1 < len(args):
            raise ValueError(f"missing argument for command line option {arg}")
        tag = arg[2:]
        if tag == "prompt" or tag == "negative_prompt":
            pos += 1
            prompt = args[pos]
            pos += 1
            while pos < len(args) and not args[pos].startswith("--"):
                prompt += " "
                prompt += args[pos]
                pos += 1
            res[tag] = prompt
            continue
        func = prompt_tags.get(tag, None)
        if func is None:
            raise ValueError(f"unknown commandline option: {arg}; valid options: "
                             + ", ".join(f"--{t}" for t in prompt_tags))
        val = args[pos + 1]
        if tag == "sampler_name":
            name = samplers_map().get(val.lower(), None)
            if name is None:
                from webui.core.generation.samplers import sampler_names

                raise ValueError(f"unknown sampler {val!r} for --sampler_name; valid samplers: "
                                 + ", ".join(sampler_names()))
            val = name
        try:
            res[tag] = func(val)
        except ValueError:
            kind = "an integer" if func is process_int_tag else "a number"
            raise ValueError(f"{arg} needs {kind}, got {val!r}") from None
        if tag == "sampler_index":
            from webui.core.generation.samplers import sampler_names

            names = sampler_names()
            if not 0 <= res[tag] < len(names):
                raise ValueError(f"--sampler_index {res[tag]} is out of range 0..{len(names) - 1} "
                                 f"(samplers: {', '.join(names)})")
        pos += 2
    return res


def load_prompt_file(file) -> str:
    """A1111 ``load_prompt_file``: the uploaded file's text, each line stripped."""
    if file is None:
        return ""
    if isinstance(file, (bytes, bytearray, memoryview)):
        file = bytes(file).decode("utf8", errors="ignore")
    return "\n".join(x.strip() for x in str(file).split("\n"))


def parse_lines(prompt_txt) -> list[dict]:
    """Every job of the text, checked before anything runs: a ScriptError names the line and what is wrong."""
    if isinstance(prompt_txt, (bytes, bytearray, memoryview)):
        prompt_txt = load_prompt_file(prompt_txt)
    lines = [x for x in (x.strip() for x in str(prompt_txt or "").splitlines()) if x]
    jobs = []
    for number, line in enumerate(lines, start=1):
        if line.startswith("--"):
            try:
                args = cmdargs(line)
            except ValueError as e:  # shlex's "No closing quotation" is a ValueError too
                raise ScriptError(TITLE, f"line {number} ({line!r}): {e}") from None
        else:
            args = {"prompt": line}
        jobs.append(args)
    return jobs


class ScriptPromptsFromFile(Script):
    def title(self):
        return TITLE

    def ui(self, is_img2img):
        return [
            ScriptArg("Iterate seed every line", False, "checkbox"),
            ScriptArg("Use same random seed for all lines", False, "checkbox"),
            ScriptArg("Insert prompts at the", "start", "radio", choices=["start", "end"]),
            ScriptArg("List of prompt inputs", "", "textbox", lines=1),
        ]

    def run(self, p, checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt):
        from webui.core.generation.processing import Processed, process_images

        jobs = parse_lines(prompt_txt)
        for number, args in enumerate(jobs, start=1):
            self._check(p, number, args)
        p.do_not_save_grid = True

        if (checkbox_iterate or checkbox_iterate_batch) and p.seed == -1:
            p.seed = int(random.randrange(4294967294))
        if p.progress is not None:
            p.progress.job_count = sum(args.get("n_iter", p.n_iter) for args in jobs)

        images, all_prompts, infotexts, base_info = [], [], [], None
        for args in jobs:
            copy_p = p.copy()
            for k, v in args.items():
                self._apply(copy_p, k, v)
            if args.get("prompt") and p.prompt:
                if prompt_position == "start":
                    copy_p.prompt = args.get("prompt") + " " + p.prompt
                else:
                    copy_p.prompt = p.prompt + " " + args.get("prompt")
            if args.get("negative_prompt") and p.negative_prompt:
                if prompt_position == "start":
                    copy_p.negative_prompt = args.get("negative_prompt") + " " + p.negative_prompt
                else:
                    copy_p.negative_prompt = p.negative_prompt + " " + args.get("negative_prompt")

            proc = process_images(copy_p)
            images += proc.images
            if base_info is None:
                base_info = proc.base_info
            if checkbox_iterate:
                p.seed = p.seed + (p.batch_size * p.n_iter)
            all_prompts += proc.all_prompts
            infotexts += proc.infotexts

        return Processed(p, images, p.seed, "", all_prompts=all_prompts, infotexts=infotexts, base_info=base_info)

    @staticmethod
    def _check(p, number, args):
        """What needs the running engine: the checkpoint of ``--sd_model`` (A1111 get_closet_checkpoint_match)."""
        name = args.get("sd_model")
        if name is None or p.engine is None:
            return
        info = p.engine.registry.closest(name)
        if info is None:
            titles = [c.title for c in p.engine.registry.list()]
            raise ScriptError(TITLE, f"line {number}: unknown checkpoint {name!r} for --sd_model; checkpoints: "
                                     + ", ".join(titles))
        args["sd_model"] = info.name

    @staticmethod
    def _apply(p, key, value):
        if key == "sd_model":
            p.override_settings["sd_model_checkpoint"] = value
        elif key == "outpath_samples":
            p.override_settings["outdir_samples"] = value
        elif key == "outpath_grids":
            p.override_settings["outdir_grids"] = value
        elif key == "styles":
            p.styles = [value]
        elif key == "sampler_index":
            from webui.core.generation.samplers import sampler_names

            p.sampler_name = sampler_names()[value]
        else:
            setattr(p, key, value)
