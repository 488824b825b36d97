"""Loaded checkpoints: which one a request means (A1111's aliases, the stored option, the first file) and the cache
that keeps them, bounded by option sd_checkpoints_limit."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import torch

from webui.core.models import fp8, offload
from webui.core.models.loader import CheckpointLoadError, ModelComponents, load_components
from webui.core.models.registry import CheckpointNotFound, CheckpointRegistry
from webui.core.types import CheckpointInfo

log = logging.getLogger(__name__)


class ModelCache:
    """Loaded checkpoints by file, most recent last, at most ``limit`` (option sd_checkpoints_limit).

    Switching back and forth never grows memory beyond the limit: the least recently used model is dropped first.
    """

    def __init__(self) -> None:
        self._models: OrderedDict[str, ModelComponents] = OrderedDict()

    def get(self, info: CheckpointInfo) -> ModelComponents | None:
        comp = self._models.get(info.filename)
        if comp is not None:
            self._models.move_to_end(info.filename)
        return comp

    def put(self, comp: ModelComponents, limit: int) -> list[ModelComponents]:
        """Add ``comp``; returns the models dropped to stay within ``limit`` (least recently used first)."""
        self._models[comp.info.filename] = comp
        self._models.move_to_end(comp.info.filename)
        return self.evict(max(1, limit))

    def drop(self, filename: str) -> ModelComponents | None:
        """Take one model out of the cache (its weights are stored differently from what is wanted now)."""
        return self._models.pop(filename, None)

    def evict(self, limit: int) -> list[ModelComponents]:
        dropped = []
        while len(self._models) > max(0, limit):
            _, comp = self._models.popitem(last=False)
            log.info("Unloaded %s", comp.info.title)
            dropped.append(comp)
        return dropped

    @property
    def current(self) -> ModelComponents | None:
        return next(reversed(self._models.values()), None)


class ModelManager:
    """Checkpoint resolution and loading over the registry and the cache. ``on_loaded(components)`` runs after each
    fresh load (the on_model_loaded hook)."""

    def __init__(self, *, settings, registry: CheckpointRegistry, plan, tokenizer_dir: str,
                 on_loaded: Callable[[ModelComponents], None] | None = None):
        self.settings = settings
        self.registry = registry
        self.plan = plan
        self.tokenizer_dir = tokenizer_dir
        self.on_loaded = on_loaded
        self.cache = ModelCache()
        self._lock = threading.RLock()  # model loads from request threads (options) vs the worker
        # checkpoints that failed to load, by file -> the reason: a request that names no checkpoint is given the
        # next usable one instead of failing forever on a bad default (cleared by forget_failures on refresh)
        self.failed: dict[str, str] = {}
        # A1111 sd_checkpoint_cache: unloaded checkpoints kept in RAM (on the CPU) for a fast switch back
        self.ram: OrderedDict[str, ModelComponents] = OrderedDict()
        # --medvram/--lowvram: the one offloaded part on the device now (A1111 lowvram.module_in_gpu)
        self.residency = offload.Residency(plan.device)
        self._fp8_unsupported: tuple[str | None] | None = None  # why float8 cannot be used here, probed once

    def resolve(self, name: str | None) -> CheckpointInfo:
        """A checkpoint by any of A1111's aliases; None -> the stored setting, else the first file that has not
        failed to load (a named one is returned even when it failed: loading it again says why)."""
        if name:
            info = self.registry.resolve(name)
            if info is None:
                raise CheckpointNotFound(name, [c.title for c in self.registry.list()])
            return info
        stored = self.settings.get("sd_model_checkpoint")
        info = self.registry.resolve(stored) if stored else None
        if info is None:
            info = self.registry.closest(stored) if stored else None
        models = self.registry.list()
        if not models:
            raise CheckpointNotFound(stored or "(none)", [])
        for candidate in ([info] if info is not None else []) + models:
            if candidate.filename not in self.failed:
                return candidate
        reasons = "; ".join(f"{c.name}: {self.failed[c.filename]}" for c in models)
        raise CheckpointLoadError(f"no usable checkpoint: {reasons}")

    def forget_failures(self) -> None:
        """Files may have been replaced (refresh-checkpoints): try the failed ones again."""
        self.failed.clear()

    def named(self, name: str, field_name: str, error: Callable[[str, str], Exception]) -> CheckpointInfo:
        """A checkpoint a request names in a field (hires checkpoint, refiner), hashed so that its short title can
        go in the infotext before it is loaded; ``error(message, field)`` builds the exception for an unknown name."""
        info = self.registry.resolve(name) or self.registry.closest(name)
        if info is None:
            raise error(
                f"{field_name}: no checkpoint named {name!r}; available: {', '.join(self.registry.titles()) or '(none)'}",
                field_name,
            )
        return self.registry.ensure_hash(info)

    def fp8_state(self, opts, is_sdxl: bool) -> fp8.Fp8State:
        """How a model should be stored under ``opts`` (options fp8_storage, cache_fp16_weight): the model cache's
        key is the file and this state. Where float8 cannot be used, off, with one log line saying why."""
        if not fp8.wanted(opts.get("fp8_storage"), is_sdxl):
            return fp8.OFF
        if self._fp8_unsupported is None:  # probed (and refused with one log line) at the first request for fp8
            self._fp8_unsupported = (fp8.unsupported_reason(torch.device(self.plan.device)),)
            if self._fp8_unsupported[0] is not None:
                log.warning("FP8 weight not applied: %s; weights keep their dtype", self._fp8_unsupported[0])
        if self._fp8_unsupported[0] is not None:
            return fp8.OFF
        return fp8.Fp8State(enabled=True, fp16_cache=bool(opts.get("cache_fp16_weight")))

    def load(self, info: CheckpointInfo, extra_slots: int = 0, opts=None) -> ModelComponents:
        """The loaded model for ``info``, loading it (and evicting beyond the limit) when needed. ``extra_slots``
        lets a second model (refiner, hires checkpoint) stay beside the first for the request, so switching back
        and forth does not reload. ``opts`` (the request's options, default the stored ones) decide the FP8 weight
        storage: a loaded model stored otherwise is dropped and loaded again from its file (A1111
        reload_model_weights when check_fp8 changes: casting float8 back up would keep its rounding)."""
        opts = self.settings if opts is None else opts
        with self._lock:
            comp = self.cache.get(info)
            if comp is not None:
                if comp.fp8 == self.fp8_state(opts, comp.is_sdxl):
                    return comp
                log.info("FP8 weight changed: reloading %s", comp.info.title)
                self.cache.drop(info.filename)
                offload.uninstall(comp, self.residency)
                del comp
            comp = self.ram.pop(info.filename, None)
            if comp is not None and comp.fp8 != self.fp8_state(opts, comp.is_sdxl):
                comp = None  # kept in RAM with the other storage: load the file again
            if comp is not None:
                _move(comp, self.plan.device)
                log.info("Model %s loaded from the RAM cache", comp.info.title)
                self._keep(self.cache.put(comp, int(self.settings.get("sd_checkpoints_limit") or 1) + extra_slots))
                return comp
            info = self.registry.ensure_hash(info)
            t0 = time.time()
            try:
                comp = load_components(info, self.plan, self.tokenizer_dir)
            except CheckpointLoadError as e:
                self.failed[info.filename] = str(e)
                log.error("Checkpoint %s could not be loaded: %s", info.filename, e)
                raise
            self.failed.pop(info.filename, None)
            state = self.fp8_state(opts, comp.is_sdxl)
            if state.enabled:
                fp8.apply(comp, state.fp16_cache)
            mode = offload.install(comp, self.plan, self.residency)
            log.info("Model %s loaded in %.1fs (%s, %s%s)", info.title, time.time() - t0, comp.arch,
                     self.plan.description, f", {mode}" if mode else "")
            self._keep(self.cache.put(comp, int(self.settings.get("sd_checkpoints_limit") or 1) + extra_slots))
            if self.on_loaded is not None:
                self.on_loaded(comp)
            return comp

    def current(self) -> ModelComponents | None:
        return self.cache.current

    def loaded(self) -> list[ModelComponents]:
        """The checkpoints in the cache now, least recently used first (the cluster reports them per replica).
        Without the lock: a reader must not wait for a load in progress; a copy taken while the cache changes is
        simply taken again."""
        for _ in range(10):
            try:
                return list(self.cache._models.values())
            except RuntimeError:  # changed during the copy
                continue
        return []

    def unload(self) -> None:
        with self._lock:
            self._keep(self.cache.evict(0))

    def _keep(self, dropped: list[ModelComponents]) -> None:
        """Models dropped from the device: up to sd_checkpoint_cache of them stay in RAM (A1111 checkpoints_loaded),
        the least recently used beyond that are freed. With offloading (--medvram/--lowvram) nothing is kept: the
        offload hooks own where those weights live."""
        keep = int(self.settings.get("sd_checkpoint_cache") or 0)
        if getattr(self.plan, "medvram", False) or getattr(self.plan, "lowvram", False) \
                or getattr(self.plan, "medvram_sdxl", False):
            keep = 0
        for comp in dropped:
            offload.uninstall(comp, self.residency)
            if keep > 0:
                _move(comp, "cpu")
                self.ram[comp.info.filename] = comp
                self.ram.move_to_end(comp.info.filename)
        while len(self.ram) > keep:
            self.ram.popitem(last=False)
        del dropped
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _move(comp: ModelComponents, device) -> None:
    """Move a model's modules to ``device`` (nothing to do when they are already there, e.g. on a CPU-only server)."""
    for module in comp.modules():
        if str(getattr(module, "device", device)) != str(device):
            module.to(device)
