"""Extra networks of one request (A1111 ``extra_networks.activate``): the ``<lora:...>`` / ``<hypernet:...>`` tags
of each batch's prompts applied to the model in a scope that closes with the request, the tags the sd_lora /
sd_hypernetwork options add, and the prompt encoder that goes with the active networks."""

from __future__ import annotations

from contextlib import ExitStack

from webui.core.generation.context import GenerationError


def option_network_tags(p, prompt: str) -> str:
    """The tags A1111 appends for the "Add network to prompt" (``sd_lora``) and "Add hypernetwork to prompt"
    (``sd_hypernetwork``) options, unless the prompt already names that network (extra_networks_lora/_hypernet
    activate). They become part of the prompt, so the infotext shows them, as in A1111."""
    from webui.core.generation import prompts as prompt_parser
    from webui.core.networks import hypernetworks as hn_mod

    opts, services = p.opts, p.services
    _, data = prompt_parser.parse_extra_networks(prompt)
    mult = opts.get("extra_networks_default_multiplier")
    tags = ""
    sd_lora = opts.get("sd_lora")
    if sd_lora and sd_lora != "None" and services.loras is not None and services.loras.resolve(sd_lora) is not None:
        named = [x for x in data.get("lora", []) + data.get("lyco", []) if tuple(x.positional)[:1] == (sd_lora,)]
        if not named:
            tags += f"<lora:{sd_lora}:{mult}>"
    if services.hypernetworks is not None:
        tag = hn_mod.prompt_tag_for_setting(opts.get("sd_hypernetwork"), data.get("hypernet", []),
                                            services.hypernetworks, mult)
        tags += tag or ""
    return tags


def networks_for_batch(p, comp, network_data, width, height):
    """Activate this batch's extra networks on ``comp`` (when they or the model changed) and return the prompt
    encoder for it."""
    from webui.core.generation.conditioning import PromptEncoder

    state = p.batches
    key = (id(comp), network_key(network_data))
    if key != state.network_key:
        state.close_networks()
        state.networks_scope = ExitStack()
        activate_networks(p, state.networks_scope, comp, network_data)
        state.network_key = key
        state.encoders.clear()  # text-encoder weights may have changed
    ekey = (id(comp), width, height)
    if ekey not in state.encoders:
        state.encoders[ekey] = PromptEncoder(comp, p.enc_options, width=width, height=height,
                                             embeddings=p.services.embeddings)
    return state.encoders[ekey]


def activate_networks(p, scope, comp, network_data: dict) -> None:
    """A1111 extra_networks.activate for LoRA/LyCORIS and hypernetworks, scoped to ``scope``."""
    from webui.core.networks import hypernetworks as hn_mod
    from webui.core.networks import lora as lora_mod

    services, extra_params, comments = p.services, p.extra_generation_params, p.comments
    extra_params.pop("Lora hashes", None)
    lora_params = list(network_data.get("lora", [])) + list(network_data.get("lyco", []))
    if lora_params and services.loras is not None:
        activations = lora_mod.activations_from_params(lora_params)
        applied = scope.enter_context(lora_mod.apply_networks(comp, activations, services.loras))
        if applied.missing:
            comments.append(f"Lora not found: {', '.join(applied.missing)}")
        comments.extend(applied.errors)
        hashes = applied.hashes_infotext()
        if hashes and services.settings.get("lora_add_hashes_to_infotext"):
            extra_params["Lora hashes"] = hashes
    elif lora_params:
        comments.append("Lora not found: " + ", ".join(x.positional[0] for x in lora_params if x.positional))
    hn_params = list(network_data.get("hypernet", []))
    if hn_params and services.hypernetworks is not None:
        try:
            pairs, missing = hn_mod.activations_from_params(hn_params, services.hypernetworks)
        except ValueError as e:
            raise GenerationError(str(e), "prompt") from e
        if missing:
            comments.append(f"Hypernetwork not found: {', '.join(missing)}")
        loaded = []
        for info, mult in pairs:
            try:
                loaded.append((services.hypernetworks.load(info), mult))
            except hn_mod.HypernetworkLoadError as e:
                comments.append(str(e))  # A1111 logs a failed file and goes on without it
        if loaded:
            scope.enter_context(hn_mod.apply_hypernetworks(comp.unet, loaded, device=comp.plan.device))
    unknown = sorted(set(network_data) - {"lora", "lyco", "hypernet"})
    if unknown:
        # A1111 logs "Skipping unknown extra network" for tags no extension handles
        comments.append(f"Unknown extra networks skipped: {', '.join(unknown)}")


def network_key(network_data: dict) -> tuple:
    """A hashable identity of a batch's extra-network tags (A1111 re-activates only when they change)."""
    return tuple(
        (kind, tuple((tuple(x.items), ) for x in params)) for kind, params in sorted(network_data.items())
    )
