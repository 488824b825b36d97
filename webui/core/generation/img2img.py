"""img2img and inpainting preparation (A1111 ``StableDiffusionProcessingImg2Img.init``) and the image conditioning
of inpainting / instruct-pix2pix models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from webui.core.generation import noise as noise_mod
from webui.core.generation.context import GenerationError


def prepare_img2img(p) -> "Img2ImgInit":
    """A1111 StableDiffusionProcessingImg2Img.init: init images (flattened, resized or cropped to the masked
    region), the mask (binarised, inverted, blurred), fill of the masked area, the init latent, the latent masks
    and the image conditioning of inpainting / instruct-pix2pix models."""
    import numpy as np
    from PIL import Image

    from webui.core.generation import imageops

    request, comp, pipe, opts = p.request, p.sd_model, p.pipe, p.opts

    if not request.init_images:
        raise GenerationError("init_images: img2img needs at least one init image", "init_images")
    images = [decode_image(data, f"init_images[{i}]") for i, data in enumerate(request.init_images)]
    batch_size = request.batch_size
    if len(images) > 1:
        if len(images) > batch_size:
            raise GenerationError(
                f"init_images: {len(images)} images for batch_size {batch_size}; send one image (repeated for the "
                f"batch) or at most batch_size images", "init_images")
        batch_size = len(images)
    width, height = request.width, request.height
    inp = request.inpaint
    # A1111 p.mask_round: the request's, unless a script changed it before init (soft inpainting turns it off)
    mask_round = p.mask_round if p.mask_round is not None else (inp.mask_round if inp is not None else True)
    mask = None
    if inp is not None:
        mask = decode_image(inp.mask, "mask")
        if mask.size != images[0].size:
            mask = mask.resize(images[0].size, Image.LANCZOS)  # A1111's UI sends them matched; resize, as it does
    bgcolor = opts.get("img2img_background_color") or "#ffffff"
    preps = []
    for img in images:
        try:
            if mask is not None:
                prep = imageops.prepare_inpaint(
                    img, mask, width=width, height=height, resize_mode=request.resize_mode,
                    mask_blur_x=inp.mask_blur_x, mask_blur_y=inp.mask_blur_y, mask_round=mask_round,
                    invert=inp.inpainting_mask_invert, inpaint_full_res=inp.inpaint_full_res,
                    padding=inp.inpaint_full_res_padding, fill_mode=inp.inpainting_fill, background_color=bgcolor,
                )
            else:
                prep = imageops.prepare_init_image(img, width=width, height=height,
                                                   resize_mode=request.resize_mode, background_color=bgcolor)
        except ValueError as e:  # combinations A1111 crashes on, said plainly
            raise GenerationError(str(e), "resize_mode") from e
        preps.append(prep)
    first = preps[0]
    overlays = [p.overlay for p in preps] if first.overlay is not None else None
    color_corrections = ([imageops.setup_color_correction(p.image) for p in preps]
                         if opts.get("img2img_color_correction") else None)
    arrays = [np.moveaxis(np.array(p.image.convert("RGB")).astype(np.float32) / 255.0, 2, 0) for p in preps]
    if len(arrays) == 1:
        arrays = arrays * batch_size
        overlays = overlays * batch_size if overlays is not None else None
        color_corrections = color_corrections * batch_size if color_corrections else color_corrections
    image_t = torch.from_numpy(np.stack(arrays))
    seed0 = request.seed if request.seed is not None and request.seed >= 0 else 0
    latent = pipe.encode(image_t, torch.Generator().manual_seed(int(seed0)))
    if first.latent_resize:
        latent = imageops.upscale_latent(latent, width, height, "Latent")

    mask_t = nmask_t = None
    image_mask = first.mask
    if first.latent_mask is not None:
        mask_t, nmask_t = imageops.latent_masks(first.latent_mask, tuple(latent.shape), mask_round)
        if inp.inpainting_fill == 2:
            # latent noise (A1111 draws it from the first seeds' generators)
            seeds, _ = noise_mod.resolve_seeds(request.seed, request.subseed, 0.0, batch_size)
            rand = noise_mod.ImageRNG(tuple(latent.shape[1:]), seeds, device=p.services.plan.device).next().cpu()
            latent = latent * mask_t + rand * nmask_t
        elif inp.inpainting_fill == 3:
            latent = latent * mask_t

    # image conditioning (A1111 img2img_image_conditioning)
    image_cond = image_uncond = None
    in_ch = comp.unet.config.in_channels
    mask_weight = float(opts.get("inpainting_mask_weight"))
    uses_inpainting_cond = in_ch == 9
    if in_ch == 9:
        source = image_t * 2 - 1
        if image_mask is not None:
            cmask = torch.from_numpy(np.array(image_mask.convert("L")).astype(np.float32) / 255.0)[None, None]
            if mask_round:
                cmask = torch.round(cmask)
        else:
            cmask = source.new_ones(1, 1, *source.shape[-2:])
        cimage = torch.lerp(source, source * (1.0 - cmask), mask_weight)
        clatent = pipe.encode((cimage + 1) / 2, torch.Generator().manual_seed(int(seed0)))
        cmask = torch.nn.functional.interpolate(cmask, size=latent.shape[-2:]).expand(clatent.shape[0], -1, -1, -1)
        image_cond = torch.cat([cmask, clatent], dim=1)
    elif in_ch == 8:
        # instruct-pix2pix: the init image's latent (posterior mode, unscaled) and zeros for the uncond rows
        vae = comp.vae
        with torch.no_grad():
            dist = vae.encode((image_t * 2 - 1).to(vae.device, vae.dtype), return_dict=False)[0]
        image_cond = dist.mode().float()

    # A1111 img2img init() starts with extra_generation_params["Denoising strength"] (info lists it there too)
    extra: dict[str, Any] = {"Denoising strength": request.denoising_strength, **first.extra_generation_params}
    multiplier = (float(request.initial_noise_multiplier) if request.initial_noise_multiplier is not None
                  else float(opts.get("initial_noise_multiplier")))
    if multiplier != 1.0:
        extra["Noise multiplier"] = multiplier
    if opts.get("img2img_extra_noise"):
        extra["Extra noise"] = float(opts.get("img2img_extra_noise"))
    return Img2ImgInit(
        batch_size=batch_size, latent=latent, image_cond=image_cond, image_uncond=image_uncond, mask=mask_t,
        nmask=nmask_t, noise_multiplier=multiplier, extra_params=extra, overlays=overlays, paste_to=first.paste_to,
        color_corrections=color_corrections, uses_inpainting_conditioning=uses_inpainting_cond,
        mask_weight=mask_weight, init_images=images, comments=list(first.comments),
        mask_for_overlay=first.mask_for_overlay,
    )


def txt2img_image_cond(comp, pipe, n, width, height, seeds):
    """A1111 txt2img_image_conditioning: an inpainting (9-channel) model sampling from nothing sees a fully
    masked grey image: mask 1 and the latent of a 0.5 image."""
    if comp.unet.config.in_channels != 9:
        return None
    grey = torch.full((n, 3, height, width), 0.5)
    latent = pipe.encode(grey, torch.Generator().manual_seed(int(seeds[0]) if seeds else 0))
    return torch.nn.functional.pad(latent, (0, 0, 0, 0, 1, 0), value=1.0)


@dataclass
class Img2ImgInit:
    """What A1111's img2img init() prepares once per job."""

    batch_size: int
    latent: torch.Tensor
    image_cond: torch.Tensor | None
    image_uncond: torch.Tensor | None
    mask: torch.Tensor | None
    nmask: torch.Tensor | None
    noise_multiplier: float
    extra_params: dict
    overlays: list | None
    paste_to: tuple | None
    color_corrections: list | None
    uses_inpainting_conditioning: bool
    mask_weight: float
    init_images: list
    comments: list = field(default_factory=list)
    mask_for_overlay: Any = None  # A1111 p.mask_for_overlay (the first init image's)

    def finish(self, image, j: int, overlay=...):
        """Per output image: color correction, then the inpainting overlay pasted back (A1111 apply_overlay);
        ``overlay`` replaces ``overlays[j]`` when given (a plugin's postprocess_maskoverlay)."""
        from webui.core.generation import imageops

        if overlay is ...:
            overlay = self.overlays[j] if self.overlays is not None else None
        if self.color_corrections:
            image = imageops.apply_color_correction(self.color_corrections[j], image)
        if overlay is not None:
            image, _ = imageops.apply_overlay(image, self.paste_to, overlay)
        return image


def decode_image(data: bytes, field_name: str):
    """Encoded image bytes -> PIL image; undecodable data is the client's error, named by its field."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise GenerationError(f"{field_name}: not a decodable image ({e})", field_name) from e
