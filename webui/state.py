"""AppState: the only shared state -- config, settings, registries, engine, queue. Built by ``build_state``."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from webui.config import Config, ensure_data_dirs
from webui.core.devices import DevicePlan, plan_devices
from webui.core.generation.engine import Engine, EnginePaths
from webui.core.models.attention import AttentionOptions
from webui.core.queue import JobQueue
from webui.core.models.registry import CheckpointRegistry, HashCache, VaeRegistry
from webui.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ServerControl:
    """What POST /sdapi/v1/server-stop and server-restart (--api-server-stop) ask of the process that serves the app
    (A1111's shared.state.server_command). ``restartable``: launch.py can re-execute itself with the same flags."""

    command: str | None = None
    restartable: bool = False
    event: threading.Event = field(default_factory=threading.Event)

    def request(self, command: str) -> None:
        self.command = command
        self.event.set()


@dataclass
class AppState:
    config: Config
    settings: Settings
    registry: CheckpointRegistry
    vae_registry: VaeRegistry
    engine: Engine
    queue: JobQueue
    plan: DevicePlan
    loras: Any = None  # webui.core.networks.lora.LoraRegistry
    embeddings: Any = None  # webui.core.networks.embeddings.EmbeddingDatabase
    hypernetworks: Any = None  # webui.core.networks.hypernetworks.HypernetworkRegistry
    styles: Any = None  # webui.core.generation.prompts.StyleDatabase
    extra_networks: Any = None  # webui.core.networks.cards.Catalog: the Extra Networks cards (listed on first use)
    plugins: Any = None  # webui.plugins.manager.PluginManager: the built-in plugins (ControlNet) and their hooks
    scripts_txt2img: Any = None  # webui.plugins.scripts.ScriptRunner of the txt2img tab (A1111 scripts_txt2img)
    scripts_img2img: Any = None  # ... of the img2img tab
    upscalers: Any = None  # webui.core.postprocess.upscalers.UpscalerRegistry
    face_restorers: Any = None  # webui.core.postprocess.face_restore.FaceRestorers
    interrogators: Any = None  # webui.core.interrogate.Interrogators: CLIP (BLIP + CLIP) and DeepDanbooru
    extensions: Any = None  # webui.plugins.extensions.ExtensionSet: extensions/ and extensions-builtin/ (issue 15)
    compat: Any = None  # webui.compat.runtime.CompatRuntime: what A1111 extensions registered (callbacks), when loaded
    demo_notice: str | None = None
    notices: list = field(default_factory=list)  # start-up problems shown on the page (bad checkpoint files, ...)
    server: ServerControl = field(default_factory=ServerControl)


def build_state(config: Config, *, create_demo: bool = True) -> AppState:
    """Create folders, read settings, scan models (writing the demo model when there is none), plan devices.

    Loads no model: that happens on the worker (``preload``) or on the first request.
    """
    from webui.core.models.demo_model import DEMO_FILENAME, DEMO_NOTICE, ensure_demo_checkpoint
    from webui.core.networks.embeddings import EmbeddingDatabase
    from webui.core.networks.hypernetworks import HypernetworkRegistry
    from webui.core.networks.lora import LoraRegistry
    from webui.core.networks.cards import Catalog
    from webui.core.generation.prompts import StyleDatabase

    ensure_data_dirs(config)
    settings = Settings.load(config.ui_settings_file)
    hash_cache = HashCache(config.hash_cache_file)
    ckpt_file = config.ckpt if config.ckpt and os.path.isfile(config.ckpt) else None
    extra_dirs = tuple(d for d in (config.ckpt_dir,) if d)
    registry = CheckpointRegistry(
        config.checkpoints_dir, extra_dirs=extra_dirs, ckpt_file=ckpt_file, hash_cache=hash_cache,
        no_hashing=config.no_hashing,
    )
    registry.refresh()
    demo_notice = None
    if not registry.list() and create_demo:
        ensure_demo_checkpoint(config.checkpoints_dir)
        registry.refresh()
    if any(os.path.basename(c.filename) == DEMO_FILENAME for c in registry.list()) and len(registry.list()) == 1:
        demo_notice = DEMO_NOTICE.format(folder=config.checkpoints_dir)
        log.warning(demo_notice)
    vae_registry = VaeRegistry(
        config.vae_models_dir, config.checkpoints_dir, extra_dirs=extra_dirs,
        extra_vae_dirs=tuple(d for d in (config.vae_dir,) if d),
    )
    vae_registry.refresh()
    plan = plan_devices(
        use_cpu=config.use_cpu, precision=config.precision, no_half=config.no_half, no_half_vae=config.no_half_vae,
        medvram=config.medvram, lowvram=config.lowvram, device_id=config.device_id,
        attention=AttentionOptions.from_config(config), channels_last=bool(config.extra("opt_channelslast")),
        cpu_autocast=config.precision_given and config.precision == "autocast",
        medvram_sdxl=bool(config.extra("medvram_sdxl")),
    )
    log.info("Device: %s", plan.description)
    # LoRA/LyCORIS, embeddings, hypernetworks and styles: A1111's folders (--lora-dir, models/LyCORIS,
    # --embeddings-dir, --hypernetwork-dir, --styles-file). Listing is cheap; files are read when used.
    loras = LoraRegistry([config.lora_dir, os.path.join(config.models_dir, "LyCORIS")], hash_cache=hash_cache)
    loras.refresh()
    embeddings = EmbeddingDatabase([config.embeddings_dir], hash_cache=hash_cache)
    hypernetworks = HypernetworkRegistry([config.hypernetwork_dir])
    hypernetworks.refresh()
    styles = StyleDatabase(list(config.styles_files))
    styles.reload()
    from webui.plugins.builtin import register_builtin_plugins
    from webui.plugins.manager import PluginManager

    plugins = PluginManager()
    scripts_txt2img, scripts_img2img = register_builtin_plugins(plugins, config, settings, plan)
    from webui.core.postprocess.face_restore import FaceRestorers
    from webui.core.postprocess.upscalers import UpscalerRegistry
    from webui.core.interrogate import Interrogators

    upscalers = UpscalerRegistry.from_config(config, plan)
    face_restorers = FaceRestorers.from_config(config, plan)
    interrogators = Interrogators.from_config(config, plan, settings)
    engine = Engine(
        settings=settings,
        registry=registry,
        plan=plan,
        paths=EnginePaths(data_dir=config.data_dir, tokenizer_dir=os.path.join(config.data_dir, "cache", "clip-tokenizer")),
        vae_registry=vae_registry,
        loras=loras,
        embeddings=embeddings,
        hypernetworks=hypernetworks,
        styles=styles,
        vae_path=dict(config.extra_flags).get("vae_path"),
        upscalers=upscalers,
        face_restorers=face_restorers,
        plugins=plugins,
        interrogators=interrogators,
    )
    if plan.medvram or plan.lowvram or plan.medvram_sdxl:
        interrogators.free_device = engine.models.residency.send_everything_to_cpu
    state = AppState(
        config=config, settings=settings, registry=registry, vae_registry=vae_registry, engine=engine,
        queue=JobQueue(), plan=plan, loras=loras, embeddings=embeddings, hypernetworks=hypernetworks,
        styles=styles, plugins=plugins, scripts_txt2img=scripts_txt2img, scripts_img2img=scripts_img2img,
        upscalers=upscalers, face_restorers=face_restorers,
        interrogators=interrogators,
        extra_networks=Catalog(registry=registry, loras=loras, embeddings=embeddings, hypernetworks=hypernetworks,
                               options=settings.get),
        demo_notice=demo_notice,
    )
    # A1111 extensions (extensions/, extensions-builtin/): their scripts join the runners above, their callbacks
    # the plugins; the A1111 API they import is bound to this state. Failures are recorded, never fatal.
    from webui.plugins.extension_loader import load_extensions

    load_extensions(state)
    return state


def preload_model(state: AppState) -> None:
    """Load the selected checkpoint on the worker at start-up (A1111 does, unless --skip-load-model-at-start) and
    store its title in ``sd_model_checkpoint``. A failure is logged, not fatal: the server keeps serving."""

    future = state.queue.submit("load-model", lambda p: load_usable_checkpoint(state))

    def done(f):
        if f.exception() is not None:
            log.error("Could not load the checkpoint at start-up: %s", f.exception())

    future.add_done_callback(done)


def load_usable_checkpoint(state: AppState) -> str:
    """The selected checkpoint, or -- when it cannot be loaded (unsafe pickle, truncated or corrupt file, unknown
    architecture) -- the next one that can, else the demo model: a bad file never takes the server hostage. Each
    failure is logged naming the file and the reason and listed in ``state.notices`` (shown on the page). Runs on
    the worker."""
    from webui.core.models.demo_model import ensure_demo_checkpoint
    from webui.core.models.loader import CheckpointLoadError
    from webui.core.models.registry import CheckpointNotFound
    from webui.core.options import switch_checkpoint

    for _ in range(len(state.registry.list()) + 1):
        try:
            title = switch_checkpoint(state.engine, state.settings, None)
            _note_failures(state)
            return title
        except CheckpointLoadError:
            failed = state.engine.models.failed
            if not failed or all(c.filename in failed for c in state.registry.list()):
                break
        except CheckpointNotFound:
            break
    _note_failures(state)
    # nothing usable: the demo model, so that the server still works end to end
    path = ensure_demo_checkpoint(state.config.checkpoints_dir)
    state.registry.refresh()
    state.notices.append(f"No usable checkpoint: using the demo model {os.path.basename(path)} (random weights)")
    log.warning(state.notices[-1])
    demo = next(c for c in state.registry.list() if os.path.realpath(c.filename) == os.path.realpath(path))
    return switch_checkpoint(state.engine, state.settings, demo.title)


def _note_failures(state: AppState) -> None:
    for filename, reason in state.engine.models.failed.items():
        notice = f"Checkpoint {os.path.basename(filename)} could not be loaded: {reason}"
        if notice not in state.notices:
            state.notices.append(notice)


def training_services(state: AppState):
    """What the trainers (webui.core.train) run on, for the API and the Train tab alike: the engine, the databases
    and A1111's folders (``--embeddings-dir``, ``--hypernetwork-dir``, ``--textual-inversion-templates-dir``; a
    relative log directory is under the data folder)."""
    from webui.core.train.common import TrainingServices

    return TrainingServices(
        engine=state.engine, settings=state.settings, embeddings=state.embeddings, hypernetworks=state.hypernetworks,
        embeddings_dir=state.config.embeddings_dir, hypernetwork_dir=state.config.hypernetwork_dir,
        templates_dir=state.config.extra("textual_inversion_templates_dir"), base_dir=state.config.data_dir,
    )
