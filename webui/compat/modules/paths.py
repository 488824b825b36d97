"""A1111 ``modules.paths`` / ``paths_internal``: the data folders of the running app (--data-dir, --models-dir)."""

from __future__ import annotations

import os

from webui.compat import binding


def _paths() -> dict[str, str]:
    from webui.plugins.extensions import builtin_extensions_dir

    config = binding.current().config
    return {
        "script_path": config.install_dir,
        "data_path": config.data_dir,
        "models_path": config.models_dir,
        "extensions_dir": config.extensions_dir,
        "extensions_builtin_dir": builtin_extensions_dir(config.install_dir),
        "default_output_dir": config.outputs_dir,
        "sd_model_file": os.path.join(config.install_dir, "model.ckpt"),
        "config_states_dir": os.path.join(config.data_dir, "config_states"),
    }


def __getattr__(name: str):
    paths = _paths()
    if name in paths:
        return paths[name]
    raise binding.missing(__name__.replace("webui.compat.", ""), name)
