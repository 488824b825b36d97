"""Live previews: a sampling step's denoised latent -> small RGB images, by option ``show_progress_type``.

A1111 ``sd_samplers_common.samples_to_images_tensor`` with its four methods:

- "Full": the checkpoint's own VAE (exact, slowest);
- "Approx NN": A1111's small convolutional approximation (``sd_vae_approx.VAEApprox``) from
  ``models/VAE-approx/model.pt`` (SD1/SD2) or ``vaeapprox-sdxl.pt`` (SDXL); a quarter of the image size;
- "Approx cheap": a fixed 4x3 matrix per latent pixel (``sd_vae_approx.cheap_approximation``); 1/8 of the size;
- "TAESD": the Tiny AutoEncoder decoder (madebyollin/taesd) from ``taesd_decoder.pth`` / ``taesdxl_decoder.pth``,
  run as diffusers' :class:`~diffusers.AutoencoderTiny`; full size.

The weight files are looked up in ``models/VAE-approx`` and, for TAESD, also in ``models/VAE-taesd`` (where A1111
downloads them). Nothing is ever downloaded here: a missing or unreadable file falls back to "Approx cheap" with one
log line naming the file. Everything runs on the queue's worker thread, inside the sampler callback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)

#: A1111 sd_samplers_common.approximation_indexes (the option's choices).
PREVIEW_METHODS = ("Full", "Approx NN", "Approx cheap", "TAESD")

#: Folders (under --models-dir) searched for the preview weights, in order. A1111 keeps Approx NN in VAE-approx and
#: TAESD in VAE-taesd; both are searched for both.
APPROX_SUBDIRS = ("VAE-approx", "VAE-taesd")

# A1111 sd_vae_approx.cheap_approximation: latent channel -> RGB coefficients ("Approx cheap" live previews).
CHEAP_APPROX_SD = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
CHEAP_APPROX_SDXL = (
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
)


def weight_file(method: str, sdxl: bool) -> str | None:
    """The file name A1111 loads for ``method`` on an SD1/SD2 (``sdxl`` False) or SDXL model; None: no file."""
    if method == "Approx NN":
        return "vaeapprox-sdxl.pt" if sdxl else "model.pt"
    if method == "TAESD":
        return "taesdxl_decoder.pth" if sdxl else "taesd_decoder.pth"
    return None


def cheap_approximation(latent, sdxl: bool = False):
    """A1111 ``sd_vae_approx.cheap_approximation``: (..., 4, h, w) latent -> (..., 3, h, w) RGB in about [-1, 1]."""
    coefs = torch.tensor(CHEAP_APPROX_SDXL if sdxl else CHEAP_APPROX_SD, dtype=torch.float32, device=latent.device)
    return torch.einsum("...lxy,lr -> ...rxy", latent.float(), coefs)


def to_uint8_images(x) -> list:
    """A1111 ``single_sample_to_image`` for each image of a (B, 3, H, W) tensor in [-1, 1]: x*0.5+0.5, clamped to
    [0, 1], times 255, truncated to uint8."""
    from PIL import Image

    x = torch.clamp(x.float() * 0.5 + 0.5, min=0.0, max=1.0)
    arr = (255.0 * x.permute(0, 2, 3, 1)).to(device="cpu", dtype=torch.uint8).numpy()
    return [Image.fromarray(a) for a in arr]


def latents_to_preview_images(latents, sdxl: bool = False) -> list:
    """"Approx cheap" previews of a (B, 4, h, w) batch; each has the latent's size (1/8 of the image)."""
    return to_uint8_images(cheap_approximation(latents, sdxl))


class VAEApprox(torch.nn.Module):
    """A1111's "Approx NN" decoder (modules/sd_vae_approx.py ``VAEApprox``), same layer names so that A1111's
    ``model.pt`` / ``vaeapprox-sdxl.pt`` load as they are. Written here because no library ships this network:
    upsample x2 (nearest), pad 11, eight valid convolutions (7, 5, then six 3x3: 22 pixels off), leaky ReLU 0.1
    after each -- the output is twice the latent's size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(4, 8, (7, 7))
        self.conv2 = torch.nn.Conv2d(8, 16, (5, 5))
        self.conv3 = torch.nn.Conv2d(16, 32, (3, 3))
        self.conv4 = torch.nn.Conv2d(32, 64, (3, 3))
        self.conv5 = torch.nn.Conv2d(64, 32, (3, 3))
        self.conv6 = torch.nn.Conv2d(32, 16, (3, 3))
        self.conv7 = torch.nn.Conv2d(16, 8, (3, 3))
        self.conv8 = torch.nn.Conv2d(8, 3, (3, 3))

    def forward(self, x):
        extra = 11
        x = torch.nn.functional.interpolate(x, (x.shape[2] * 2, x.shape[3] * 2))
        x = torch.nn.functional.pad(x, (extra, extra, extra, extra))
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5, self.conv6, self.conv7, self.conv8):
            x = torch.nn.functional.leaky_relu(layer(x), 0.1)
        return x


def taesd_decoder_state_dict(sd: dict) -> dict:
    """A TAESD decoder file's keys -> diffusers ``AutoencoderTiny.decoder`` keys.

    madebyollin's ``taesd_decoder.pth`` is an ``nn.Sequential`` whose item 0 is the tanh clamp (no weights), so its
    ``N.*`` is diffusers' ``layers.{N-1}.*`` (diffusers applies the clamp in ``DecoderTiny.forward``). A file already
    in diffusers' layout (``layers.*`` or ``decoder.layers.*``) is taken as it is."""
    out = {}
    for key, value in sd.items():
        key = key.removeprefix("decoder.")
        if key.startswith("layers."):
            out[key] = value
            continue
        head, _, rest = key.partition(".")
        if not head.isdigit() or not rest:
            raise ValueError(f"not a TAESD decoder key: {key!r}")
        out[f"layers.{int(head) - 1}.{rest}"] = value
    return out


def _read_state_dict(path: str) -> dict:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError("not a state dict")
    return sd


def load_approx_nn(path: str) -> VAEApprox:
    model = VAEApprox()
    model.load_state_dict(_read_state_dict(path))
    return model.eval().requires_grad_(False)


def load_taesd_decoder(path: str):
    """diffusers' AutoencoderTiny (TAESD's architecture at its defaults) with the decoder weights of ``path``; the
    encoder stays unused (previews only decode)."""
    from diffusers import AutoencoderTiny

    model = AutoencoderTiny()
    model.decoder.load_state_dict(taesd_decoder_state_dict(_read_state_dict(path)))
    return model.eval().requires_grad_(False)


class PreviewDecoder:
    """Turns a latent batch into preview images by the method asked, loading the small decoders on first use and
    keeping them (a few MB) for the next previews.

    ``models_dir``: where ``VAE-approx`` / ``VAE-taesd`` live (None: no files, Approx NN and TAESD fall back).
    ``model``: the loaded checkpoint being sampled (webui.core.models.loader.ModelComponents), for "Full".
    ``dtype``: what the small decoders run in on an accelerator (A1111 devices.dtype); on CPU they run float32.
    """

    def __init__(self, models_dir: str | None = None, model: Callable[[], Any] | None = None,
                 dtype: torch.dtype = torch.float32, plan: Any = None) -> None:
        self.models_dir = models_dir
        self.model = model or (lambda: None)
        self.dtype = dtype
        self.plan = plan  # the device plan: --medvram / --lowvram (webui.core.devices.DevicePlan)
        self._loaded: dict[tuple[str, float], torch.nn.Module] = {}
        self._warned: set[tuple[str, str]] = set()

    def method_for(self, method: str, allow_lowvram_full: bool = False) -> str:
        """A1111 ``single_sample_to_image``: "Full" becomes "Approx NN" while the model runs under --medvram /
        --lowvram (each full VAE decode would move the VAE onto the device and back), unless option
        live_preview_allow_lowvram_full."""
        if method != "Full" or allow_lowvram_full or self.plan is None:
            return method
        from webui.core.models.offload import mode_for

        comp = self.model()
        return "Approx NN" if comp is not None and mode_for(self.plan, comp) is not None else method

    def find(self, name: str) -> str | None:
        if not self.models_dir:
            return None
        for sub in APPROX_SUBDIRS:
            path = os.path.join(self.models_dir, sub, name)
            if os.path.isfile(path):
                return path
        return None

    def _fallback(self, method: str, what: str, why: str) -> None:
        """One log line per (method, file): the preview goes on with Approx cheap."""
        if (method, what) not in self._warned:
            self._warned.add((method, what))
            log.warning("Live preview method %r: %s %s; showing 'Approx cheap' previews instead", method, what, why)

    def _small_decoder(self, method: str, sdxl: bool):
        name = weight_file(method, sdxl)
        path = self.find(name)
        if path is None:
            where = " or ".join(os.path.join(self.models_dir or "models", sub) for sub in APPROX_SUBDIRS)
            self._fallback(method, name, f"is not in {where}")
            return None
        key = (path, os.path.getmtime(path))
        module = self._loaded.get(key)
        if module is None:
            try:
                module = load_approx_nn(path) if method == "Approx NN" else load_taesd_decoder(path)
            except Exception as e:  # a bad file must not fail the generation
                self._fallback(method, path, f"could not be loaded ({type(e).__name__}: {e})")
                return None
            self._loaded = {k: v for k, v in self._loaded.items() if k[0] != path}
            self._loaded[key] = module
        return module

    def _run_dtype(self, device: torch.device) -> torch.dtype:
        return self.dtype if device.type != "cpu" else torch.float32

    @torch.no_grad()
    def decode(self, latents, method: str, sdxl: bool = False):
        """(B, 4, h, w) latents -> (B, 3, H, W) RGB in about [-1, 1] by ``method``; unknown methods, missing files
        and a missing model (for "Full") give Approx cheap."""
        latents = latents.detach()
        if method == "Full":
            comp = self.model()
            if comp is None or getattr(comp, "vae", None) is None:
                self._fallback(method, "the checkpoint's VAE", "is not loaded")
            else:
                vae = comp.vae
                # one image at a time, as A1111's single_sample_to_image; its VAE's dtype (no NaN retry here: that
                # would change the VAE the final decode uses)
                return torch.cat([
                    vae.decode((x[None] / vae.config.scaling_factor).to(vae.device, vae.dtype), return_dict=False)[0]
                    .float().cpu() for x in latents])
        elif method in ("Approx NN", "TAESD"):
            module = self._small_decoder(method, sdxl)
            if module is not None:
                device = latents.device
                dtype = self._run_dtype(device)
                module.to(device=device, dtype=dtype)
                x = latents.to(dtype)
                if method == "Approx NN":
                    return module(x).float()
                return module.decode(x, return_dict=False)[0].float()  # diffusers: already x*2-1
        elif method != "Approx cheap":
            self._fallback(method, "the method", f"is not one of {', '.join(PREVIEW_METHODS)}")
        return cheap_approximation(latents, sdxl)

    def images(self, latents, method: str, sdxl: bool = False) -> list:
        return to_uint8_images(self.decode(latents, method, sdxl))
