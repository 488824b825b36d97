"""A1111's public extension API (``modules.*``) as thin views over this server's core and plugins.

Extensions import it as ``modules`` (``webui.compat.binding`` installs the import hook when extensions load). Each
submodule maps A1111's names onto ours; nothing is copied from A1111. What is supported is listed in
docs/extensions.md; a missing submodule raises ModuleNotFoundError, a missing name AttributeError, both naming it.
"""
