"""A1111's Hypertile script (extensions-builtin/hypertile/scripts/hypertile_script.py): always on, no controls
(its settings are options, section "Hypertile"); when the options enable it, the UNet's and the VAE's
self-attention run on tiles (``webui.core.generation.hypertile``) for this request only.

As A1111: ``process`` seeds the tiling RNG with ``p.all_seeds[0]`` and configures the model for the first pass
(UNet on with ``hypertile_enable_unet``, VAE with ``hypertile_enable_vae``) and writes the infotext;
``before_hr`` configures it for the hires size (UNet on with ``hypertile_enable_unet_secondpass`` or
``hypertile_enable_unet``, reseeding when on) and writes "Hypertile U-Net second pass" when only the second pass
has it. The wrapped layers are restored when the request ends (``p.scope``).
"""

from __future__ import annotations

from webui.plugins.scripts import AlwaysVisible, Script

#: the options and A1111's defaults (its OptionInfo defaults; the table in webui/core/settings.py holds the same)
UNET_OPTIONS = ("hypertile_max_depth_unet", "hypertile_max_tile_unet", "hypertile_swap_size_unet")
VAE_OPTIONS = ("hypertile_max_depth_vae", "hypertile_max_tile_vae", "hypertile_swap_size_vae")

#: option key -> infotext key (A1111's OptionInfo(..., infotext=...)), for add_infotext and pasting
INFOTEXT_KEYS = {
    "hypertile_enable_unet": "Hypertile U-Net",
    "hypertile_enable_unet_secondpass": "Hypertile U-Net second pass",
    "hypertile_max_depth_unet": "Hypertile U-Net max depth",
    "hypertile_max_tile_unet": "Hypertile U-Net max tile size",
    "hypertile_swap_size_unet": "Hypertile U-Net swap size",
    "hypertile_enable_vae": "Hypertile VAE",
    "hypertile_max_depth_vae": "Hypertile VAE max depth",
    "hypertile_max_tile_vae": "Hypertile VAE max tile size",
    "hypertile_swap_size_vae": "Hypertile VAE swap size",
}


def _flag(p, key: str) -> bool:
    value = p.opts.get(key)
    if isinstance(value, str):  # pasted from an infotext ("True"): A1111 Options.cast_value
        return value.strip().lower() not in ("false", "", "0", "none")
    return bool(value)


def _int(p, key: str) -> int:
    return int(float(p.opts.get(key)))


class ScriptHypertile(Script):
    name = "Hypertile"

    def title(self):
        return self.name

    def show(self, is_img2img):
        return AlwaysVisible

    def ui(self, is_img2img):
        # no controls, as A1111's (its ui() is the base one, None): /scripts and /script-info then name it by its
        # class name "Hypertile", not the lower-cased title
        return None

    def process(self, p, *args):
        tiler = _tiler(p)
        tiler.seed(p.all_seeds[0])
        configure(p, tiler, p.sd_model, p.width, p.height, enable_unet=_flag(p, "hypertile_enable_unet"))
        self.add_infotext(p)

    def before_hr(self, p, *args):
        tiler = _tiler(p)
        enable = _flag(p, "hypertile_enable_unet_secondpass") or _flag(p, "hypertile_enable_unet")
        if enable:  # an own seed for the second pass
            tiler.seed(p.all_seeds[0])
        configure(p, tiler, _hires_model(p), p.hr.target_width, p.hr.target_height, enable_unet=enable)
        if enable and not _flag(p, "hypertile_enable_unet"):
            p.extra_generation_params["Hypertile U-Net second pass"] = True
            self.add_infotext(p, add_unet_params=True)

    def add_infotext(self, p, add_unet_params=False):
        """A1111: the switch that is on, and each of its numbers that differs from the default (else None,
        which leaves the key out of the infotext)."""
        from webui.core.settings import OPTIONS_BY_KEY

        def option(key):
            value = _int(p, key)
            return None if value == OPTIONS_BY_KEY[key].default else value

        if _flag(p, "hypertile_enable_unet"):
            p.extra_generation_params["Hypertile U-Net"] = True
        if _flag(p, "hypertile_enable_unet") or add_unet_params:
            for key in UNET_OPTIONS:
                p.extra_generation_params[INFOTEXT_KEYS[key]] = option(key)
        if _flag(p, "hypertile_enable_vae"):
            p.extra_generation_params["Hypertile VAE"] = True
            for key in VAE_OPTIONS:
                p.extra_generation_params[INFOTEXT_KEYS[key]] = option(key)


def _tiler(p):
    """This request's Hypertile, entered into the request's scope on first use (restored when the request ends)."""
    from webui.core.generation.hypertile import Hypertile

    tiler = p.plugin_data.get("Hypertile")
    if tiler is None:
        tiler = Hypertile()
        p.scope.enter_context(tiler)
        p.plugin_data["Hypertile"] = tiler
    return tiler


def _hires_model(p):
    """The components the hires pass samples with: A1111 hooks ``shared.sd_model``, which is the hires
    checkpoint's model once it has been switched to (already loaded by the time before_hr runs)."""
    if p.hr_checkpoint is None:
        return p.sd_model
    return p.services.load(p.hr_checkpoint, extra_slots=1, opts=p.opts)


def configure(p, tiler, components, width: int, height: int, enable_unet: bool) -> None:
    """A1111 ``configure_hypertile``: the VAE (its own options, A1111's SD table) then the UNet."""
    from webui.core.generation.hypertile import unet_ldm_name

    tiler.configure(
        components.vae, width, height,
        swap_size=_int(p, "hypertile_swap_size_vae"),
        max_depth=_int(p, "hypertile_max_depth_vae"),
        tile_size_max=_int(p, "hypertile_max_tile_vae"),
        enable=_flag(p, "hypertile_enable_vae"),
    )
    unet = components.unet
    tiler.configure(
        unet, width, height,
        swap_size=_int(p, "hypertile_swap_size_unet"),
        max_depth=_int(p, "hypertile_max_depth_unet"),
        tile_size_max=_int(p, "hypertile_max_tile_unet"),
        enable=enable_unet,
        is_sdxl=bool(components.is_sdxl),
        name_of=lambda name: unet_ldm_name(name, unet.config),
    )
