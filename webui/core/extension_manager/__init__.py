"""Managing installed extensions as A1111's Extensions tab does (modules/ui_extensions.py, modules/extensions.py,
modules/config_states.py): git status and updates (``git``), installing from a URL (``install``), the index of
available extensions (``index``) and the backup/restore of the extension state (``config_states``).

UI-free and HTTP-free: the Extensions tab (webui/ui/tabs/extensions.py) renders what these return. Extensions are
read duck-typed (``name``, ``path``, ``is_builtin``, ``enabled``, ``remote``, ``branch``, ``commit_hash``,
``commit_date``, ``have_info_from_repo``, ``read_info_from_repo()``: webui.plugins.extensions.Extension).

Git runs as the ``git`` command, not GitPython (A1111's choice): GitPython is not a dependency here, and each
operation is one git command line whose timeout and environment (no credential prompt) we control.
"""
