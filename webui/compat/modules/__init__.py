"""A1111's public extension API (``modules.*``) as thin views over this server's core and plugins.

Extensions import it as ``modules`` (``webui.compat.binding`` installs the import hook when extensions load). Each
submodule maps A1111's names onto ours; nothing is copied from A1111. What is supported is listed in
docs/extensions.md; a missing submodule raises ModuleNotFoundError, a missing name AttributeError, both naming it.
"""


def __getattr__(name: str):
    """``from modules import X``: X is a submodule we provide, else an ImportError naming ``modules.X`` (Python's
    own message would only say "cannot import name")."""
    import importlib
    import importlib.util

    if name.startswith("__"):
        raise AttributeError(name)
    if importlib.util.find_spec(f"{__name__}.{name}") is None:
        raise ImportError(f"modules.{name} is not provided by this server's A1111 extension API (see "
                          "docs/extensions.md)", name=f"modules.{name}")
    return importlib.import_module(f"{__name__}.{name}")
