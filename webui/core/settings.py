"""A1111's options ("Settings" tab, /sdapi/v1/options, config.json) as one data table, plus the store.

The table is the single source of keys, defaults, types, sections and UI hints; the API's GET/POST /options, the
Settings tab and ``override_settings`` all read it. A request's overrides make an effective copy; the stored
settings change only through :meth:`Settings.set` (POST /options, the UI), and are saved atomically.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from webui.core.io.files import atomic_write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Option:
    key: str
    default: Any
    label: str
    section: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    api_restricted: bool = False  # readable, not settable through the API (A1111's restrict_api)
    display_only: bool = False  # HTML explanation entries
    info: str | None = None  # the hint under the control (A1111 OptionInfo.info); extension options set it
    needs_reload_ui: bool = False  # A1111 OptionInfo.needs_reload_ui(): the Settings tab says so
    section_title: str | None = None  # the page title of a section the table does not know (an extension's)
    kind: str | None = None  # the control an extension asked for (checkbox, slider, radio, dropdown, textbox, ...)
    extension: str | None = None  # the extension that added the option (None: ours)


def _opts(section: str, *rows: tuple) -> list[Option]:
    out = []
    for row in rows:
        key, default, label, *rest = row
        extra = rest[0] if rest else {}
        out.append(Option(key, default, label, section, **extra))
    return out


SAMPLER_NAMES_NOTE = "see /sdapi/v1/samplers"

# A1111 OptionHTML's value (the text, stripped), which GET /options returns for hypertile_explanation
HYPERTILE_EXPLANATION = (
    "<a href='https://github.com/tfernd/HyperTile'>Hypertile</a> optimizes the self-attention layer within U-Net "
    "and VAE models,\n    resulting in a reduction in computation time ranging from 1 to 4 times. The larger the "
    "generated image is, the greater the\n    benefit."
)

OPTIONS: tuple[Option, ...] = tuple(
    _opts(
        "saving-images",
        ("samples_save", True, "Always save all generated images"),
        ("samples_format", "png", "File format for images", {"choices": ("png", "jpg", "jpeg", "webp")}),
        ("samples_filename_pattern", "", "Images filename pattern"),
        ("save_images_add_number", True, "Add number to filename when saving"),
        ("grid_save", True, "Always save all generated image grids"),
        ("grid_format", "png", "File format for grids"),
        ("grid_extended_filename", False, "Add extended info (seed, prompt) to filename when saving grid"),
        ("grid_only_if_multiple", True, "Do not save grids consisting of one picture"),
        ("grid_prevent_empty_spots", False, "Prevent empty spots in grid (when set to autodetect)"),
        ("n_rows", -1, "Grid row count; use -1 for autodetect and 0 for it to be same as batch size", {"minimum": -1, "maximum": 16, "step": 1}),
        ("enable_pnginfo", True, "Save text information about generation parameters as chunks to png files"),
        ("save_txt", False, "Create a text file next to every image with generation parameters."),
        ("save_images_before_face_restoration", False, "Save a copy of image before doing face restoration."),
        ("jpeg_quality", 80, "Quality for saved jpeg and webp images", {"minimum": 1, "maximum": 100, "step": 1}),
        ("webp_lossless", False, "Use lossless compression for webp images"),
        ("export_for_4chan", True, "Save copy of large images as JPG"),
        ("use_original_name_batch", True, "Use original name for output filename during batch process in extras tab"),
        ("save_selected_only", True, "When using 'Save' button, only save a single selected image"),
    )
    + _opts(
        "saving-paths",
        ("outdir_samples", "", "Output directory for images; if empty, defaults to three directories below"),
        ("outdir_txt2img_samples", "outputs/txt2img-images", "Output directory for txt2img images"),
        ("outdir_img2img_samples", "outputs/img2img-images", "Output directory for img2img images"),
        ("outdir_extras_samples", "outputs/extras-images", "Output directory for images from extras tab"),
        ("outdir_grids", "", "Output directory for grids; if empty, defaults to two directories below"),
        ("outdir_txt2img_grids", "outputs/txt2img-grids", "Output directory for txt2img grids"),
        ("outdir_img2img_grids", "outputs/img2img-grids", "Output directory for img2img grids"),
        ("outdir_save", "log/images", "Directory for saving images using the Save button"),
        ("outdir_init_images", "outputs/init-images", "Directory for saving init images when using img2img"),
    )
    + _opts(
        "saving-to-dirs",
        ("save_to_dirs", True, "Save images to a subdirectory"),
        ("grid_save_to_dirs", True, "Save grids to a subdirectory"),
        ("directories_filename_pattern", "[date]", "Directory name pattern"),
        ("directories_max_prompt_words", 8, "Max prompt words for [prompt_words] pattern", {"minimum": 1, "maximum": 20, "step": 1}),
    )
    + _opts(
        "sd",
        ("sd_model_checkpoint", None, "Stable Diffusion checkpoint"),
        ("sd_checkpoints_limit", 1, "Maximum number of checkpoints loaded at the same time", {"minimum": 1, "maximum": 10, "step": 1}),
        ("sd_checkpoints_keep_in_cpu", True, "Only keep one model on device"),
        ("sd_checkpoint_cache", 0, "Checkpoints to cache in RAM", {"minimum": 0, "maximum": 10, "step": 1}),
        ("sd_unet", "Automatic", "SD Unet"),
        ("enable_quantization", False, "Enable quantization in K samplers for sharper and cleaner results."),
        ("emphasis", "Original", "Emphasis mode", {"choices": ("None", "Ignore", "Original", "No norm")}),
        ("enable_batch_seeds", True, "Make K-diffusion samplers produce same images in a batch as when making a single image"),
        ("comma_padding_backtrack", 20, "Prompt word wrap length limit", {"minimum": 0, "maximum": 74, "step": 1}),
        ("CLIP_stop_at_last_layers", 1, "Clip skip", {"minimum": 1, "maximum": 12, "step": 1}),
        ("upcast_attn", False, "Upcast cross attention layer to float32"),
        ("randn_source", "GPU", "Random number generator source.", {"choices": ("GPU", "CPU", "NV")}),
        ("tiling", False, "Tiling"),
        ("hires_fix_refiner_pass", "second pass", "Hires fix: which pass to enable refiner for", {"choices": ("first pass", "second pass", "both passes")}),
    )
    + _opts(
        "sdxl",
        ("sdxl_crop_top", 0, "crop top coordinate"),
        ("sdxl_crop_left", 0, "crop left coordinate"),
        ("sdxl_refiner_low_aesthetic_score", 2.5, "SDXL low aesthetic score"),
        ("sdxl_refiner_high_aesthetic_score", 6.0, "SDXL high aesthetic score"),
        ("sdxl_clip_l_skip", False, "Clip skip SDXL"),
    )
    + _opts(
        "extra_networks",
        ("extra_networks_show_hidden_directories", True, "Show hidden directories"),
        ("extra_networks_default_multiplier", 1.0, "Default multiplier for extra networks", {"minimum": 0.0, "maximum": 2.0, "step": 0.01}),
        ("extra_networks_add_text_separator", " ", "Extra networks separator"),
        ("textual_inversion_print_at_load", False, "Print a list of Textual Inversion embeddings when loading model"),
        ("textual_inversion_add_hashes_to_infotext", True, "Add Textual Inversion hashes to infotext"),
        ("sd_hypernetwork", "None", "Add hypernetwork to prompt"),
        ("sd_lora", "None", "Add network to prompt"),
        ("lora_preferred_name", "Alias from file", "When adding to prompt, refer to Lora by", {"choices": ("Filename", "Alias from file")}),
        ("lora_add_hashes_to_infotext", True, "Add Lora hashes to infotext"),
        ("lora_bundled_ti_to_infotext", True, "Add Lora name as TI hashes for bundled Textual Inversion"),
        ("lora_show_all", False, "Always show all networks on the Lora page"),
        ("lora_hide_unknown_for_versions", [], "Hide networks of unknown versions for model versions"),
        ("lora_in_memory_limit", 0, "Number of Lora networks to keep cached in memory", {"minimum": 0, "maximum": 20, "step": 1}),
        ("lora_not_found_warning_console", False, "Lora not found warning in console"),
        ("lora_not_found_gradio_warning", False, "Lora not found warning popup in webui"),
    )
    + _opts(
        "control_net",
        ("control_net_unit_count", 3, "Multi-ControlNet: ControlNet unit number", {"minimum": 1, "maximum": 10, "step": 1}),
        ("control_net_model_cache_size", 2, "Model cache size", {"minimum": 1, "maximum": 10, "step": 1}),
        ("control_net_no_detectmap", False, "Do not append detectmap to output"),
        ("control_net_detectmap_autosaving", False, "Allow detectmap auto saving"),
        ("control_net_allow_script_control", False, "Allow other script to control this extension"),
    )
    + _opts(
        # A1111's built-in extension Hypertile (extensions-builtin/hypertile, scripts/hypertile_script.py)
        "hypertile",
        ("hypertile_explanation", HYPERTILE_EXPLANATION, "Hypertile optimizes the self-attention layer within U-Net "
         "and VAE models, resulting in a reduction in computation time ranging from 1 to 4 times. The larger the "
         "generated image is, the greater the benefit.", {"display_only": True}),
        ("hypertile_enable_unet", False, "Enable Hypertile U-Net"),
        ("hypertile_enable_unet_secondpass", False, "Enable Hypertile U-Net for hires fix second pass"),
        ("hypertile_max_depth_unet", 3, "Hypertile U-Net max depth", {"minimum": 0, "maximum": 3, "step": 1}),
        ("hypertile_max_tile_unet", 256, "Hypertile U-Net max tile size", {"minimum": 0, "maximum": 512, "step": 16}),
        ("hypertile_swap_size_unet", 3, "Hypertile U-Net swap size", {"minimum": 0, "maximum": 64, "step": 1}),
        ("hypertile_enable_vae", False, "Enable Hypertile VAE"),
        ("hypertile_max_depth_vae", 3, "Hypertile VAE max depth", {"minimum": 0, "maximum": 3, "step": 1}),
        ("hypertile_max_tile_vae", 128, "Hypertile VAE max tile size", {"minimum": 0, "maximum": 512, "step": 16}),
        ("hypertile_swap_size_vae", 3, "Hypertile VAE swap size ", {"minimum": 0, "maximum": 64, "step": 1}),
    )
    + _opts(
        "vae",
        ("sd_vae_checkpoint_cache", 0, "VAE Checkpoints to cache in RAM", {"minimum": 0, "maximum": 10, "step": 1}),
        ("sd_vae", "Automatic", "SD VAE"),
        ("sd_vae_overrides_per_model_preferences", True, "Selected VAE overrides per-model preferences"),
        ("auto_vae_precision_bfloat16", False, "Automatically convert VAE to bfloat16"),
        ("auto_vae_precision", True, "Automatically revert VAE to 32-bit floats"),
        ("sd_vae_encode_method", "Full", "VAE type for encode", {"choices": ("Full", "TAESD")}),
        ("sd_vae_decode_method", "Full", "VAE type for decode", {"choices": ("Full", "TAESD")}),
    )
    + _opts(
        "img2img",
        ("inpainting_mask_weight", 1.0, "Inpainting conditioning mask strength", {"minimum": 0.0, "maximum": 1.0, "step": 0.01}),
        ("initial_noise_multiplier", 1.0, "Noise multiplier for img2img", {"minimum": 0.0, "maximum": 1.5, "step": 0.001}),
        ("img2img_extra_noise", 0.0, "Extra noise multiplier for img2img and hires fix", {"minimum": 0.0, "maximum": 1.0, "step": 0.01}),
        ("img2img_color_correction", False, "Apply color correction to img2img results to match original colors."),
        ("img2img_fix_steps", False, "With img2img, do exactly the amount of steps the slider specifies."),
        ("img2img_background_color", "#ffffff", "With img2img, fill transparent parts of the input image with this color."),
        ("return_mask", False, "For inpainting, include the greyscale mask in results for web"),
        ("return_mask_composite", False, "For inpainting, include masked composite in results for web"),
        ("img2img_batch_show_results_limit", 32, "Show the first N batch img2img results in UI"),
        ("upscaler_for_img2img", None, "Upscaler for img2img"),
    )
    + _opts(
        "optimizations",
        ("cross_attention_optimization", "Automatic", "Cross attention optimization", {"choices": (
            "Automatic", "xformers", "sdp-no-mem - scaled dot product without memory efficient attention",
            "sdp - scaled dot product", "sub-quadratic", "V1 - original v1", "InvokeAI", "Doggettx", "None")}),
        ("s_min_uncond", 0.0, "Negative Guidance minimum sigma", {"minimum": 0.0, "maximum": 15.0, "step": 0.01}),
        ("s_min_uncond_all", False, "Negative Guidance minimum sigma all steps"),
        ("skip_early_cond", 0.0, "Ignore negative prompt during early sampling", {"minimum": 0.0, "maximum": 1.0, "step": 0.01}),
        ("token_merging_ratio", 0.0, "Token merging ratio", {"minimum": 0.0, "maximum": 0.9, "step": 0.1}),
        ("token_merging_ratio_img2img", 0.0, "Token merging ratio for img2img"),
        ("token_merging_ratio_hr", 0.0, "Token merging ratio for high-res pass"),
        ("pad_cond_uncond", False, "Pad prompt/negative prompt"),
        ("pad_cond_uncond_v0", False, "Pad prompt/negative prompt (v0)"),
        ("persistent_cond_cache", True, "Persistent cond cache"),
        ("batch_cond_uncond", True, "Batch cond/uncond"),
        # FP8 weight storage (webui/core/models/fp8.py): changing either reloads the checkpoint at its next use
        ("fp8_storage", "Disable", "FP8 weight", {"choices": ("Disable", "Enable for SDXL", "Enable"), "kind": "radio",
         "info": "Use FP8 to store Linear/Conv layers' weight. Require pytorch>=2.1.0."}),
        ("cache_fp16_weight", False, "Cache FP16 weight for LoRA", {
            "info": "Cache fp16 weight when enabling FP8, will increase the quality of LoRA. Use more system ram."}),
    )
    + _opts(
        "compatibility",
        ("use_old_emphasis_implementation", False, "Use old emphasis implementation. Can be useful to reproduce old seeds."),
        ("use_old_karras_scheduler_sigmas", False, "Use old karras scheduler sigmas (0.1 to 10)."),
        ("no_dpmpp_sde_batch_determinism", False, "Do not make DPM++ SDE deterministic across different batch sizes."),
        ("use_old_hires_fix_width_height", False, "For hires fix, use width/height sliders to set final resolution rather than first pass"),
        ("hires_fix_use_firstpass_conds", False, "For hires fix, calculate conds of second pass using extra networks of first pass."),
        ("use_old_scheduling", False, "Use old prompt editing timelines."),
        ("use_downcasted_alpha_bar", False, "Downcast model alphas_cumprod to fp16 before sampling. For reproducing old seeds."),
        ("refiner_switch_by_sample_steps", False, "Switch to refiner by sampling steps instead of model timesteps."),
    )
    + _opts(
        "infotext",
        ("add_model_hash_to_info", True, "Add model hash to infotext"),
        ("add_model_name_to_info", True, "Add model name to infotext"),
        ("add_user_name_to_info", False, "Add user name to infotext when authenticated"),
        ("add_version_to_infotext", True, "Add program version to infotext"),
        ("add_vae_hash_to_info", True, "Add VAE hash to infotext"),
        ("add_vae_name_to_info", True, "Add VAE name to infotext"),
        ("disable_weights_auto_swap", True, "Disregard checkpoint information from pasted infotext"),
        ("infotext_skip_pasting", [], "Disregard fields from pasted infotext"),
        ("infotext_styles", "Apply if any", "Infer styles from prompts of pasted infotext", {"choices": ("Ignore", "Apply", "Discard", "Apply if any")}),
    )
    + _opts(
        "ui",
        ("show_progressbar", True, "Show progressbar"),
        ("live_previews_enable", True, "Show live previews of the created image"),
        ("live_previews_image_format", "png", "Live preview file format", {"choices": ("jpeg", "png", "webp")}),
        ("show_progress_grid", True, "Show previews of all images generated in a batch as a grid"),
        ("show_progress_every_n_steps", 10, "Live preview display period", {"minimum": -1, "maximum": 32, "step": 1}),
        ("show_progress_type", "Approx NN", "Live preview method", {"choices": ("Full", "Approx NN", "Approx cheap", "TAESD")}),
        ("live_preview_allow_lowvram_full", False, "Allow Full live preview method with lowvram/medvram",
         {"info": "If not, Approx NN will be used instead; Full live preview method is very detrimental to speed if "
                  "lowvram/medvram optimizations are enabled"}),
        ("live_preview_content", "Prompt", "Live preview subject", {"choices": ("Combined", "Prompt", "Negative prompt")}),
        ("live_preview_refresh_period", 1000, "Progressbar and preview update period"),
        ("quicksettings_list", ["sd_model_checkpoint"], "Quicksettings list"),
        ("hide_samplers", [], "Hide samplers in user interface"),
        ("return_grid", True, "Show grid in gallery"),
        ("do_not_show_images", False, "Do not show any images in gallery"),
        ("js_modal_lightbox", True, "Full page image viewer: enable"),
        ("enable_prompt_comments", True, "Enable comments"),
        ("disable_token_counters", False, "Disable prompt token counters"),
    )
    + _opts(
        "sampler-params",
        ("eta_ddim", 0.0, "Eta for DDIM", {"minimum": 0.0, "maximum": 1.0, "step": 0.01}),
        ("eta_ancestral", 1.0, "Eta for k-diffusion samplers", {"minimum": 0.0, "maximum": 1.0, "step": 0.01}),
        ("ddim_discretize", "uniform", "img2img DDIM discretize", {"choices": ("uniform", "quad")}),
        ("s_churn", 0.0, "sigma churn", {"minimum": 0.0, "maximum": 100.0, "step": 0.01}),
        ("s_tmin", 0.0, "sigma tmin", {"minimum": 0.0, "maximum": 10.0, "step": 0.01}),
        ("s_tmax", 0.0, "sigma tmax", {"minimum": 0.0, "maximum": 999.0, "step": 0.01}),
        ("s_noise", 1.0, "sigma noise", {"minimum": 0.0, "maximum": 1.1, "step": 0.001}),
        ("sigma_min", 0.0, "sigma min"),
        ("sigma_max", 0.0, "sigma max"),
        ("rho", 0.0, "rho"),
        ("eta_noise_seed_delta", 0, "Eta noise seed delta (ENSD)"),
        ("always_discard_next_to_last_sigma", False, "Always discard next-to-last sigma"),
        ("sgm_noise_multiplier", False, "SGM noise multiplier"),
        ("uni_pc_variant", "bh1", "UniPC variant", {"choices": ("bh1", "bh2", "vary_coeff")}),
        ("uni_pc_skip_type", "time_uniform", "UniPC skip type", {"choices": ("time_uniform", "time_quadratic", "logSNR")}),
        ("uni_pc_order", 3, "UniPC order", {"minimum": 1, "maximum": 50, "step": 1}),
        ("uni_pc_lower_order_final", True, "UniPC lower order final"),
        ("sd_noise_schedule", "Default", "Noise schedule for sampling", {"choices": ("Default", "Zero Terminal SNR")}),
        ("beta_dist_alpha", 0.6, "Beta scheduler - alpha", {"minimum": 0.01, "maximum": 1.0, "step": 0.01}),
        ("beta_dist_beta", 0.6, "Beta scheduler - beta", {"minimum": 0.01, "maximum": 1.0, "step": 0.01}),
    )
    + _opts(
        "face-restoration",
        ("face_restoration", False, "Restore faces"),
        ("face_restoration_model", "CodeFormer", "Face restoration model"),
        ("code_former_weight", 0.5, "CodeFormer weight", {"minimum": 0.0, "maximum": 1.0, "step": 0.01}),
        ("face_restoration_unload", False, "Move face restoration model from VRAM into RAM after processing"),
    )
    + _opts(
        "upscaling",
        ("ESRGAN_tile", 192, "Tile size for ESRGAN upscalers.", {"minimum": 0, "maximum": 512, "step": 16}),
        ("ESRGAN_tile_overlap", 8, "Tile overlap for ESRGAN upscalers.", {"minimum": 0, "maximum": 48, "step": 1}),
        ("realesrgan_enabled_models", ["R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"], "Select which Real-ESRGAN models to show in the web UI."),
        ("dat_enabled_models", ["DAT x2", "DAT x3", "DAT x4"], "Select which DAT models to show in the web UI."),
        ("upscaler_for_img2img_default", None, "Upscaler for img2img (deprecated alias)"),
    )
    + _opts(
        "system",
        ("auto_launch_browser", "Local", "Automatically open webui in browser on startup"),
        ("enable_console_prompts", False, "Print prompts to console when generating with txt2img and img2img."),
        ("show_warnings", False, "Show warnings in console."),
        ("memmon_poll_rate", 8, "VRAM usage polls per second during generation."),
        ("multiple_tqdm", True, "Add a second progress bar to the console that shows progress for an entire job."),
        ("list_hidden_files", True, "Load models/files in hidden directories"),
        ("disable_mmap_load_safetensors", False, "Disable memmapping for loading .safetensors files."),
    )
    + _opts(
        "api",
        ("api_enable_requests", True, "Allow http:// and https:// URLs for input images in API", {"api_restricted": True}),
        ("api_forbid_local_requests", True, "Forbid URLs to local resources", {"api_restricted": True}),
        ("api_useragent", "", "User agent for requests", {"api_restricted": True}),
    )
    + _opts(
        # A1111's built-in extension "extra-options-section": settings shown under the generation parameters
        "settings_in_ui",
        ("settings_in_ui", "This page allows you to add some settings to the main interface of txt2img and img2img "
         "tabs.", "This page allows you to add some settings to the main interface of txt2img and img2img tabs.",
         {"display_only": True}),
        ("extra_options_txt2img", [], "Settings for txt2img"),
        ("extra_options_img2img", [], "Settings for img2img"),
        ("extra_options_cols", 1, "Number of columns for added settings", {"minimum": 1, "maximum": 20, "step": 1}),
        ("extra_options_accordion", False, "Place added settings into an accordion"),
    )
    + _opts(
        # A1111's "Hidden options" section (id None): set by the program, listed by GET /options, not on a page
        "hidden",
        ("disabled_extensions", [], "Disable these extensions"),
        ("disable_all_extensions", "none", "Disable all extensions (preserves the list of disabled extensions)",
         {"choices": ("none", "extra", "all")}),
        ("restore_config_state_file", "", "Config state file to restore from, under 'config-states/' folder"),
        ("sd_checkpoint_hash", "", "SHA256 hash of the current checkpoint"),
    )
    + _opts(
        # A1111 1.10's "Postprocessing" section (the ones this server acts on; postprocessing_enable_in_main_ui and
        # upscaling_max_images_in_cache are not listed: there is no postprocessing in the generation tabs here)
        "postprocessing",
        ("postprocessing_disable_in_extras", [], "Disable postprocessing operations in extras tab"),
        ("postprocessing_operation_order", [], "Postprocessing operation order"),
        ("postprocessing_existing_caption_action", "Ignore", "Action for existing captions",
         {"choices": ("Ignore", "Keep", "Prepend", "Append"),
          "info": "when generating captions using postprocessing; Ignore = use generated; Keep = use original; "
                  "Prepend/Append = combine both"}),
    )
    + _opts(
        # A1111 1.10's "Interrogate" section (shared_options.py): the clip (BLIP + CLIP) and deepdanbooru interrogators
        "interrogate",
        ("interrogate_keep_models_in_memory", False, "Keep models in VRAM"),
        ("interrogate_return_ranks", False, "Include ranks of model tags matches in results.", {"info": "booru only"}),
        ("interrogate_clip_num_beams", 1, "BLIP: num_beams", {"minimum": 1, "maximum": 16, "step": 1}),
        ("interrogate_clip_min_length", 24, "BLIP: minimum description length", {"minimum": 1, "maximum": 128, "step": 1}),
        ("interrogate_clip_max_length", 48, "BLIP: maximum description length", {"minimum": 1, "maximum": 256, "step": 1}),
        ("interrogate_clip_dict_limit", 1500, "CLIP: maximum number of lines in text file", {"info": "0 = No limit"}),
        ("interrogate_clip_skip_categories", [], "CLIP: skip inquire categories"),
        ("interrogate_deepbooru_score_threshold", 0.5, "deepbooru: score threshold", {"minimum": 0.0, "maximum": 1.0, "step": 0.01}),
        ("deepbooru_sort_alpha", True, "deepbooru: sort tags alphabetically", {"info": "if not: sort by score"}),
        ("deepbooru_use_spaces", True, "deepbooru: use spaces in tags", {"info": "if not: use underscores"}),
        ("deepbooru_escape", True, "deepbooru: escape (\\) brackets", {"info": "so they are used as literal brackets and not for emphasis"}),
        ("deepbooru_filter_tags", "", "deepbooru: filter out those tags", {"info": "separate by comma"}),
    )
    + _opts(
        "training",
        ("unload_models_when_training", False, "Move VAE and CLIP to RAM when training if possible."),
        ("save_optimizer_state", False, "Saves Optimizer state as separate *.optim file. Training of embedding or HN can be resumed with the matching optim file."),
        ("save_training_settings_to_txt", True, "Save textual inversion and hypernet settings to a text file whenever training starts."),
        ("dataset_filename_word_regex", "", "Filename word regex"),
        ("dataset_filename_join_string", " ", "Filename join string"),
        ("training_image_repeats_per_epoch", 1, "Number of repeats for a single input image per epoch"),
        ("training_write_csv_every", 500, "Save an csv containing the loss to log directory every N steps, 0 to disable"),
        ("training_enable_tensorboard", False, "Enable tensorboard logging."),
        ("training_tensorboard_save_images", False, "Save generated images within tensorboard."),
        ("training_tensorboard_flush_every", 120, "How often, in seconds, to flush the pending tensorboard events and summaries to disk."),
    )
)

OPTIONS_BY_KEY: dict[str, Option] = {o.key: o for o in OPTIONS}


class UnknownOption(KeyError):
    """A key that is not a registered option (A1111 raises KeyError -> 500; we answer 4xx naming the key)."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"unknown option {self.key!r}; see GET /sdapi/v1/options for the valid keys"


@dataclass
class Settings:
    """The stored options: registered keys only, values as stored (ints stay ints, as checked against A1111).

    ``extra_options`` are the options extensions added at start (A1111 ``opts.add_option`` in on_ui_settings): this
    instance's schema is ``OPTIONS`` + those, so two apps in one process never share an extension's option. Values
    config.json holds for keys nobody registered (an extension that is disabled today) are kept in ``unregistered``
    and written back on save, as A1111 keeps them in ``opts.data``; registering the key later picks the value up.
    """

    path: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    extra_options: dict[str, Option] = field(default_factory=dict)
    unregistered: dict[str, Any] = field(default_factory=dict)
    listeners: dict[str, list] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @classmethod
    def load(cls, path: str | None) -> "Settings":
        values: dict[str, Any] = {}
        unregistered: dict[str, Any] = {}
        if path and os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    stored = json.load(f)
                values = {k: v for k, v in stored.items() if k in OPTIONS_BY_KEY}
                unregistered = {k: v for k, v in stored.items() if k not in OPTIONS_BY_KEY}
            except (OSError, ValueError) as e:
                log.warning("could not read settings %s (%s); using defaults", path, e)
        return cls(path=path, values=values, unregistered=unregistered)

    def option(self, key: str) -> Option:
        """The schema entry of ``key`` (ours or an extension's); UnknownOption when neither has it."""
        opt = OPTIONS_BY_KEY.get(key) or self.extra_options.get(key)
        if opt is None:
            raise UnknownOption(key)
        return opt

    def options(self) -> list[Option]:
        """This instance's schema in order: the table, then extension options in the order they were added."""
        return [*OPTIONS, *self.extra_options.values()]

    def has(self, key: str) -> bool:
        return key in OPTIONS_BY_KEY or key in self.extra_options

    def add_option(self, opt: Option) -> None:
        """Register an extension's option (A1111 ``opts.add_option``): a key of the table is never replaced; a
        stored value from config.json becomes its value."""
        if opt.key in OPTIONS_BY_KEY:
            raise ValueError(f"option {opt.key!r} already exists")
        with self._lock:
            self.extra_options[opt.key] = opt
            if opt.key in self.unregistered:
                self.values[opt.key] = self.unregistered.pop(opt.key)

    def get(self, key: str) -> Any:
        opt = self.option(key)
        return self.values.get(key, opt.default)

    def __getattr__(self, key: str) -> Any:  # opts.samples_format, as A1111 code reads options
        if key.startswith("_") or key in ("path", "values", "extra_options", "unregistered", "listeners"):
            raise AttributeError(key)
        try:
            return self.get(key)
        except UnknownOption as e:
            raise AttributeError(key) from e

    def all(self) -> dict[str, Any]:
        """Every registered key with its current value, in table order (GET /sdapi/v1/options)."""
        with self._lock:
            return {o.key: self.values.get(o.key, o.default) for o in self.options()}

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> "Settings":
        """An effective copy for one request; unknown keys raise :class:`UnknownOption`."""
        if not overrides:
            return self
        for key in overrides:
            if not self.has(key):
                raise UnknownOption(key)
        with self._lock:
            return Settings(path=None, values={**self.values, **dict(overrides)}, extra_options=self.extra_options)

    def set(self, key: str, value: Any) -> bool:
        """Store one value (no save). Returns whether it changed."""
        if not self.has(key):
            raise UnknownOption(key)
        with self._lock:
            old = self.get(key)
            if old == value and key in self.values:
                return False
            self.values[key] = value
        if old != value:
            for listener in list(self.listeners.get(key, ())):
                try:  # A1111 opts.onchange: a failing listener is logged, the value stays set
                    listener()
                except Exception:
                    log.exception("option %s: change listener %r failed", key, listener)
        return True

    def on_change(self, key: str, listener) -> None:
        """Call ``listener()`` after the stored value of ``key`` changes (A1111 ``opts.onchange``)."""
        self.option(key)
        self.listeners.setdefault(key, []).append(listener)

    def save(self) -> None:
        """Write config.json atomically (temp file + rename), like A1111 but without a torn file on a crash."""
        if not self.path:
            return
        with self._lock:
            data = json.dumps({**self.all(), **self.unregistered}, indent=4, ensure_ascii=False)
        atomic_write(self.path, data)

    def keys(self) -> Iterable[str]:
        return [o.key for o in self.options()]
