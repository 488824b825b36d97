"""Loaded checkpoints: which one a request means (A1111's aliases, the stored option, the first file) and the cache
that keeps them, bounded by option sd_checkpoints_limit."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import torch

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

    def put(self, comp: ModelComponents, limit: int) -> None:
        self._models[comp.info.filename] = comp
        self._models.move_to_end(comp.info.filename)
        while len(self._models) > max(1, limit):
            _, dropped = self._models.popitem(last=False)
            log.info("Unloaded %s", dropped.info.title)
            del dropped
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def evict(self, limit: int) -> None:
        while len(self._models) > max(0, limit):
            self._models.popitem(last=False)

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

    def load(self, info: CheckpointInfo, extra_slots: int = 0) -> ModelComponents:
        """The loaded model for ``info``, loading it (and evicting beyond the limit) when needed. ``extra_slots``
        lets a second model (refiner, hires checkpoint) stay beside the first for the request, so switching back
        and forth does not reload."""
        with self._lock:
            comp = self.cache.get(info)
            if comp is not None:
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
            log.info("Model %s loaded in %.1fs (%s, %s)", info.title, time.time() - t0, comp.arch, self.plan.description)
            self.cache.put(comp, int(self.settings.get("sd_checkpoints_limit") or 1) + extra_slots)
            if self.on_loaded is not None:
                self.on_loaded(comp)
            return comp

    def current(self) -> ModelComponents | None:
        return self.cache.current

    def unload(self) -> None:
        with self._lock:
            self.cache.evict(0)
