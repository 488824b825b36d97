"""The plugin manager: pluggy over ``hooks.py``, built-in plugins registered by ``build_state``.

Hooks are called one implementation at a time (in pluggy's order: last registered first, tryfirst/trylast honoured)
so that a failure can name its plugin: the request fails with :class:`PluginError`, the server goes on.
"""

from __future__ import annotations

import logging
from typing import Any

import pluggy

from webui.plugins import hooks

log = logging.getLogger(__name__)


class PluginError(RuntimeError):
    """A plugin's hook raised; the message names the plugin and the hook."""

    def __init__(self, plugin: str, hook: str, error: BaseException):
        super().__init__(f"{plugin}: {hook} failed: {type(error).__name__}: {error}")
        self.plugin = plugin
        self.hook = hook
        self.error = error


class PluginManager:
    def __init__(self) -> None:
        self._pm = pluggy.PluginManager(hooks.PROJECT)
        self._pm.add_hookspecs(hooks)

    def register(self, plugin: Any, name: str) -> None:
        self._pm.register(plugin, name=name)

    def unregister(self, name: str) -> None:
        plugin = self._pm.get_plugin(name)
        if plugin is not None:
            self._pm.unregister(plugin)

    def get(self, name: str) -> Any:
        return self._pm.get_plugin(name)

    def names(self) -> list[str]:
        return [name for name, _ in self._pm.list_name_plugin()]

    def has(self, hook_name: str) -> bool:
        """Whether any plugin implements ``hook_name`` (the per-step denoiser hooks are skipped when none does)."""
        return bool(getattr(self._pm.hook, hook_name).get_hookimpls())

    def call(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call every implementation of ``hook_name``; the non-None results, in call order. A raising hook becomes a
        :class:`PluginError` naming the plugin (it propagates: the request fails, the server does not)."""
        hook = getattr(self._pm.hook, hook_name)
        results = []
        for impl in reversed(hook.get_hookimpls()):
            try:
                result = impl.function(*[kwargs[arg] for arg in impl.argnames])
            except PluginError:
                raise
            except Exception as e:
                if _is_client_error(e):
                    raise  # a plugin refusing bad input (ValueError with a field) stays the client's error
                log.exception("plugin %s: hook %s failed", impl.plugin_name, hook_name)
                raise PluginError(impl.plugin_name, hook_name, e) from e
            if result is not None:
                results.append(result)
        return results

    def first(self, hook_name: str, **kwargs: Any) -> Any:
        results = self.call(hook_name, **kwargs)
        return results[0] if results else None


def _is_client_error(e: Exception) -> bool:
    """Errors a plugin raises about the request itself (a core GenerationError, ControlNet's unit errors): they keep
    their own 4xx mapping instead of becoming a plugin failure."""
    from webui.core.generation.context import GenerationError

    return isinstance(e, GenerationError) or getattr(e, "client_error", False)
