"""The Extensions tab (A1111 ``modules/ui_extensions.py`` create_ui): Installed (the table, enable/disable, "Apply
and restart UI", "Check for updates"), Available (an index JSON loaded from a URL), Install from URL, and
Backup/Restore of the extension state. The work is ``webui.core.extension_manager``; this module renders HTML and
wires the buttons.

A1111 puts checkboxes inside its HTML table and collects them with JavaScript; here the enabled set and the update
set are two gradio checkbox groups under the table (same choices, same effect on Apply).
"""

from __future__ import annotations

import html
import logging
import os
import time
from datetime import datetime

import gradio as gr

from webui.core.extension_manager import actions, config_states, index as ext_index, install as ext_install
from webui.core.extension_manager.install import ExtensionAccessDenied, InstallError

log = logging.getLogger(__name__)

NAME = "extensions"
STYLE_PRIMARY = ' style="color: var(--primary-400)"'


# -- the extension list ----------------------------------------------------------------------------------------------


def current_extensions(state) -> list:
    """Every extension folder now (A1111 re-lists them for the tab and after an install): the objects of this
    start (their load errors, update status) for the folders that were there at start, fresh ones for new folders."""
    from webui.plugins.extensions import discover

    fresh = discover(state.config, state.settings)
    known = {e.name: e for e in (state.extensions.all if state.extensions is not None else [])}
    out = []
    for ext in fresh.all:
        old = known.get(ext.name)
        if old is not None and os.path.abspath(old.path) == os.path.abspath(ext.path):
            out.append(old)
        else:
            out.append(ext)
    return out


def _access_disabled(state) -> bool:
    return bool(state.config.extension_access_disabled)


def _states_folder(state) -> str:
    return config_states.config_states_dir(state.config.data_dir)


def _disabled_message(state) -> str:
    """A1111's notice when extensions are switched off as a whole."""
    config = state.config
    mode = state.settings.get("disable_all_extensions")
    if config.disable_all_extensions:
        msg = '"--disable-all-extensions" was used, remove it to load all extensions again'
    elif mode != "none":
        msg = '"Disable all extensions" was set, change it to "none" to load all extensions again'
    elif config.disable_extra_extensions:
        msg = '"--disable-extra-extensions" was used, remove it to load all extensions again'
    else:
        return ""
    return f'<span style="color: var(--primary-400);">{msg}</span>'


def _commit_link(commit_hash: str, remote: str | None, text: str | None = None) -> str:
    """A1111 make_commit_link: a link to the commit on GitHub remotes, else the text."""
    text = html.escape(text if text is not None else commit_hash[:8])
    if remote and remote.startswith("https://github.com/"):
        base = remote[:-4] if remote.endswith(".git") else remote
        return f'<a href="{html.escape(base)}/commit/{html.escape(commit_hash)}" target="_blank">{text}</a>'
    return text


def extension_table(state, extensions=None) -> str:
    """A1111 extension_table: name, URL ("built-in" for built-ins), branch, version, date, update status; plus what
    failed to load (this server reports it here, A1111 only in the console)."""
    extensions = current_extensions(state) if extensions is None else extensions
    config, mode = state.config, state.settings.get("disable_all_extensions")
    rows = []
    for ext in extensions:
        ext.read_info_from_repo()
        remote = (f'<a href="{html.escape(ext.remote or "")}" target="_blank">'
                  f'{html.escape("built-in" if ext.is_builtin else ext.remote or "")}</a>')
        off = (config.disable_all_extensions or mode == "all"
               or ((config.disable_extra_extensions or mode == "extra") and not ext.is_builtin))
        style = STYLE_PRIMARY if off else ""
        version = html.escape(ext.version or "")
        if ext.commit_hash and ext.remote:
            version = _commit_link(ext.commit_hash, ext.remote, ext.version)
        date = str(datetime.fromtimestamp(ext.commit_date)) if ext.commit_date else ""
        status = html.escape(ext.status or "") + (" (update selected below)" if ext.can_update else "")
        errors = "".join(f"<div class='webui-error'>{html.escape(str(e))}</div>" for e in ext.errors)
        rows.append(f"""
            <tr data-extension="{html.escape(ext.name)}">
                <td><label{style}><input type="checkbox" disabled {'checked="checked"' if ext.enabled else ''}>"""
                    f"""{html.escape(ext.name)}</label>{errors}</td>
                <td>{remote}</td>
                <td>{html.escape(ext.branch or "")}</td>
                <td>{version}</td>
                <td>{html.escape(date)}</td>
                <td{' class="extension_status"' if ext.remote is not None else ''}>{status}</td>
            </tr>""")
    return f"""<!-- {time.time()} -->
    <table id="extensions">
        <thead><tr><th>Extension</th><th>URL</th><th>Branch</th><th>Version</th><th>Date</th><th>Update</th></tr></thead>
        <tbody>{''.join(rows)}
        </tbody>
    </table>"""


def _error_html(message: str) -> str:
    return f"<div class='webui-error'>{html.escape(message)}</div>"


# -- Installed -------------------------------------------------------------------------------------------------------


def _installed_controls(state):
    extensions = current_extensions(state)
    names = [e.name for e in extensions]
    enabled = [e.name for e in extensions if e.enabled]
    updatable = [e.name for e in extensions if e.can_update]
    return extensions, names, enabled, updatable


def refresh_installed(state):
    extensions, names, enabled, updatable = _installed_controls(state)
    return (extension_table(state, extensions), gr.update(choices=names, value=enabled),
            gr.update(choices=updatable, value=updatable))


def apply_and_restart(state, enabled, update, disable_all):
    """A1111 apply_and_restart: store the enabled set (and update what was ticked), then restart when this process
    can (started by launch.py), else stop, as A1111's "Apply and quit"."""
    try:
        failures = actions.apply_changes(
            state.settings, current_extensions(state), enabled=list(enabled or []), update=list(update or []),
            disable_all=disable_all or "none", access_disabled=_access_disabled(state),
            states_folder=_states_folder(state), install_dir=state.config.install_dir)
    except (ExtensionAccessDenied, ValueError) as e:
        return _error_html(str(e))
    command = "restart" if state.server.restartable else "stop"
    log.warning("Extensions tab: settings saved; %s", "restarting" if command == "restart" else "stopping")
    state.server.request(command)
    notes = "".join(_error_html(f) for f in failures)
    return notes + ("<span>Restarting...</span>" if command == "restart" else
                    "<span>Saved. The server is stopping: start it again to load the new set.</span>")


def check_for_updates(state, enabled):
    """A1111 check_updates (the enabled extensions with a remote); a remote that cannot be reached is said here."""
    extensions = current_extensions(state)
    disabled = [e.name for e in extensions if e.name not in set(enabled or [])]
    try:
        problems = actions.check_updates(extensions, disabled, _access_disabled(state))
    except ExtensionAccessDenied as e:
        return extension_table(state, extensions), gr.update(), _error_html(str(e))
    updatable = [e.name for e in extensions if e.can_update]
    info = "".join(_error_html(p) for p in problems) or ("<span>Updates found: select them below and apply.</span>"
                                                         if updatable else "<span>All extensions are up to date."
                                                                           "</span>")
    return extension_table(state, extensions), gr.update(choices=updatable, value=updatable), info


# -- Available -------------------------------------------------------------------------------------------------------


def available_table(state, index_data, selected_tags, showing_type, filtering_type, sort_column, filter_text=""):
    """A1111 refresh_available_extensions_from_data as HTML: (table, tag choices, the (name, url) of each listed
    extension not installed yet -- what A1111's Install buttons install)."""
    if not index_data:
        return "", None, []
    extensions = current_extensions(state)
    for ext in extensions:
        ext.read_info_from_repo()
    listing = ext_index.available(index_data, [e.name for e in extensions], [e.remote for e in extensions],
                                  selected_tags=selected_tags or [], showing_type=showing_type,
                                  filtering_type=filtering_type, sort_column=sort_column or 0,
                                  filter_text=filter_text or "")
    rows = []
    for row in listing.rows:
        tags = ", ".join(f"<span class='extension-tag' title='{html.escape(listing.tags.get(t, ''))}'>"
                         f"{html.escape(t)}</span>" for t in row.tags)
        rows.append(f"""
            <tr>
                <td><a href="{html.escape(row.url)}" target="_blank">{html.escape(row.name)}</a><br />{tags}</td>
                <td>{html.escape(row.description)}<p class="info"><span class="date_added">Update: """
                    f"""{html.escape(row.update_time)}  Added: {html.escape(row.added)}  Created: """
                    f"""{html.escape(row.create_time)}</span><span class="star_count">stars: <b>{row.stars}</b>"""
                    f"""</span></p></td>
                <td>{'Installed' if row.installed else html.escape(row.url)}</td>
            </tr>""")
    code = f"""<!-- {time.time()} -->
    <table id="available_extensions">
        <thead><tr><th>Extension</th><th>Description</th><th>Action</th></tr></thead>
        <tbody>{''.join(rows)}
        </tbody>
    </table>"""
    if listing.hidden > 0:
        code += f"<p>Extension hidden: {listing.hidden}</p>"
    return code, list(listing.tags), [(row.name, row.url) for row in listing.rows if not row.installed]


# -- Backup/Restore --------------------------------------------------------------------------------------------------


def config_state_choices(state) -> list[str]:
    return ["Current", *config_states.list_config_states(_states_folder(state)).keys()]


def config_state_table(state, name: str) -> str:
    """A1111 update_config_states_table: the saved (or current) web UI and extension state, differences to now in
    the primary colour."""
    extensions = current_extensions(state)
    if name == "Current" or not name:
        cs = config_states.get_config(extensions, state.config.install_dir)
    else:
        try:
            cs = actions.find_state(_states_folder(state), name)
        except ValueError as e:
            return _error_html(str(e))
    created = datetime.fromtimestamp(cs["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
    webui = cs.get("webui") or {}
    rows = []
    current = {e.name: e for e in extensions}
    for ext_name, conf in (cs.get("extensions") or {}).items():
        now = current.get(ext_name)
        style_enabled = STYLE_PRIMARY if now is not None and now.enabled != conf.get("enabled") else ""
        style_commit = STYLE_PRIMARY if now is not None and (now.commit_hash or None) != (conf.get("commit_hash") or None) \
            else ""
        commit = conf.get("commit_hash") or "<unknown>"
        date = time.asctime(time.gmtime(conf["commit_date"])) if conf.get("commit_date") else "<unknown>"
        rows.append(f"""
        <tr>
            <td><label{style_enabled}><input type="checkbox" disabled {'checked="checked"' if conf.get('enabled') else ''}>"""
                    f"""{html.escape(ext_name)}</label></td>
            <td>{html.escape(conf.get('remote') or '')}</td>
            <td>{html.escape(conf.get('branch') or '<unknown>')}</td>
            <td><label{style_commit}>{_commit_link(commit, conf.get('remote'))}</label></td>
            <td><label{style_commit}>{html.escape(date)}</label></td>
        </tr>""")
    return f"""<!-- {time.time()} -->
<h2>Config Backup: {html.escape(str(cs.get('name', 'Config')))}</h2>
<div><b>Filepath:</b> {html.escape(str(cs.get('filepath', '<unknown>')))}</div>
<div><b>Created at:</b> {created}</div>
<h2>WebUI State</h2>
<table id="config_state_webui"><thead><tr><th>URL</th><th>Branch</th><th>Commit</th><th>Date</th></tr></thead><tbody>
<tr><td>{html.escape(webui.get('remote') or '')}</td><td>{html.escape(webui.get('branch') or '')}</td>
<td>{html.escape(webui.get('commit_hash') or '<unknown>')}</td>
<td>{html.escape(time.asctime(time.gmtime(webui['commit_date'])) if webui.get('commit_date') else '<unknown>')}</td></tr>
</tbody></table>
<h2>Extension State</h2>
<table id="config_state_extensions"><thead><tr><th>Extension</th><th>URL</th><th>Branch</th><th>Commit</th><th>Date</th>
</tr></thead><tbody>{''.join(rows)}
</tbody></table>"""


def save_config_state(state, name):
    path = config_states.save_config_state(_states_folder(state), name, current_extensions(state),
                                           state.config.install_dir)
    choices = config_state_choices(state)
    value = choices[1] if len(choices) > 1 else "Current"
    return gr.update(choices=choices, value=value), \
        f'<span>Saved current webui/extension state to "{html.escape(path)}"</span>'


def restore_config_state(state, name, restore_type):
    """A1111 restore_config_state, then a restart (or stop) as after Apply. ``name`` is "" when the browser's
    confirmation was declined."""
    if name == "Current":
        return "<span>Select a config to restore from.</span>"
    if not name:
        return "<span>Cancelled.</span>"
    try:
        cs = actions.find_state(_states_folder(state), name)
        report = actions.restore_state(state.settings, current_extensions(state), cs, restore_type,
                                       _access_disabled(state))
    except (ExtensionAccessDenied, ValueError) as e:
        return _error_html(str(e))
    command = "restart" if state.server.restartable else "stop"
    state.server.request(command)
    lines = "".join(f"<div>{html.escape(line)}</div>" for line in report)
    return lines + ("<span>Restored; restarting...</span>" if command == "restart" else
                    "<span>Restored. The server is stopping: start it again to load the restored set.</span>")


# -- the tab ---------------------------------------------------------------------------------------------------------


def build(state) -> None:
    with gr.Tabs(elem_id="tabs_extensions"):
        with gr.Tab("Installed", id="installed"):
            with gr.Row(elem_id="extensions_installed_top"):
                apply = gr.Button(_apply_label(state), variant="primary", elem_id="extensions_apply")
                check = gr.Button("Check for updates", elem_id="extensions_check")
                disable_all = gr.Radio(label="Disable all extensions", choices=list(actions.DISABLE_ALL_CHOICES),
                                       value=state.settings.get("disable_all_extensions"),
                                       elem_id="extensions_disable_all")
                refresh = gr.Button("Refresh", elem_id="extensions_refresh")
            info = gr.HTML(_disabled_message(state), elem_id="extensions_info")
            table = gr.HTML("Loading...", elem_id="extensions_installed_html")
            enabled = gr.CheckboxGroup(label="Enabled extensions (applied by the button above)", choices=[],
                                       elem_id="extensions_enabled")
            update = gr.CheckboxGroup(label="Update on apply (found by Check for updates)", choices=[],
                                      elem_id="extensions_update")
            installed_outputs = [table, enabled, update]
            refresh.click(lambda: refresh_installed(state), None, installed_outputs, show_progress="hidden")
            apply.click(lambda e, u, d: apply_and_restart(state, e, u, d), [enabled, update, disable_all], info)
            check.click(lambda e: check_for_updates(state, e), [enabled], [table, update, info])

        with gr.Tab("Available", id="available"):
            # the loaded index stays on the server (A1111 keeps it in a module global); the page holds its URL
            loaded_indexes: dict[str, dict] = {}
            index_data = gr.Textbox("", visible=False, elem_id="extensions_loaded_index")
            with gr.Row():
                load = gr.Button("Load from:", variant="primary", elem_id="extensions_load_index")
                index_url = gr.Textbox(value=ext_index.default_index_url(), label="Extension index URL",
                                       elem_id="extensions_index_url")
            with gr.Row():
                tags = gr.CheckboxGroup(value=list(ext_index.DEFAULT_TAGS), label="Extension tags",
                                        choices=list(ext_index.TAG_CHOICES), elem_id="extensions_tags")
                sort = gr.Radio(value="newest first", label="Order", choices=list(ext_index.SORT_CHOICES),
                                type="index", elem_id="extensions_sort")
            with gr.Row():
                showing = gr.Radio(value="hide", label="Showing type", choices=["hide", "show"])
                filtering = gr.Radio(value="or", label="Filtering type", choices=["or", "and"])
            search = gr.Textbox(label="Search", elem_id="extensions_search")
            available_result = gr.HTML(elem_id="extensions_available_result")
            available = gr.HTML(elem_id="extensions_available_html")
            with gr.Row():  # A1111's per-row Install buttons, as one choice of the listed extensions
                to_install = gr.Dropdown(label="Extension to install", choices=[], value=None,
                                         elem_id="extensions_index_choice", scale=3)
                install_listed = gr.Button("Install", elem_id="extensions_index_install", scale=1)

            def load_index(url, selected, show, filt, order):
                try:
                    data = ext_index.load_index(url)
                except ext_index.IndexUnavailable as e:
                    return "", "", gr.update(), gr.update(choices=[], value=None), _error_html(str(e))
                loaded_indexes.clear()  # one index at a time, as A1111's available_extensions
                loaded_indexes[url] = data
                code, tag_choices, installable = available_table(state, data, selected, show, filt, order)
                # A1111 sets the index's tags as the choices; ours keep its four too, so the default value stays valid
                choices = list(dict.fromkeys([*ext_index.TAG_CHOICES, *tag_choices]))
                return url, code, gr.update(choices=choices), gr.update(choices=installable, value=None), ""

            load.click(load_index, [index_url, tags, showing, filtering, sort],
                       [index_data, available, tags, to_install, available_result])

            def relist(loaded_url, selected, show, filt, order, text):
                code, _, installable = available_table(state, loaded_indexes.get(loaded_url), selected, show, filt,
                                                       order, text)
                return code, gr.update(choices=installable, value=None)

            relist_inputs = [index_data, tags, showing, filtering, sort, search]
            for control in (tags, sort, showing, filtering, search):
                control.change(relist, relist_inputs, [available, to_install], show_progress="hidden")

        with gr.Tab("Install from URL", id="install_from_url"):
            install_url = gr.Textbox(label="URL for extension's git repository", elem_id="extensions_install_url")
            install_branch = gr.Textbox(label="Specific branch name", placeholder="Leave empty for default main branch",
                                        elem_id="extensions_install_branch")
            install_dirname = gr.Textbox(label="Local directory name", placeholder="Leave empty for auto",
                                         elem_id="extensions_install_dirname")
            install_button = gr.Button("Install", variant="primary", elem_id="extensions_install_button")
            install_result = gr.HTML(elem_id="extension_install_result")

            def do_install(dirname, url, branch):
                try:
                    target = install_extension(state, url, dirname, branch)
                except (ExtensionAccessDenied, InstallError) as e:
                    return gr.update(), *refresh_installed(state), _error_html(str(e))
                return "", *refresh_installed(state), html.escape(ext_install.installed_message(target))

            install_button.click(do_install, [install_dirname, install_url, install_branch],
                                 [install_url, *installed_outputs, install_result])

            def do_install_listed(url, *relist_values):
                """A1111 install_extension_from_index: install, then list the index again (now "installed")."""
                if not url:
                    return gr.update(), gr.update(), *refresh_installed(state), "<span>Choose an extension.</span>"
                try:
                    target = install_extension(state, url)
                except (ExtensionAccessDenied, InstallError) as e:
                    return gr.update(), gr.update(), *refresh_installed(state), _error_html(str(e))
                return (*relist(*relist_values), *refresh_installed(state),
                        html.escape(ext_install.installed_message(target)))

            install_listed.click(do_install_listed, [to_install, *relist_inputs],
                                 [available, to_install, *installed_outputs, available_result])

        with gr.Tab("Backup/Restore", id="backup_restore"):
            with gr.Row(elem_id="extensions_backup_top_row"):
                saved = gr.Dropdown(label="Saved Configs", choices=["Current"], value="Current",
                                    elem_id="extension_backup_saved_configs")
                refresh_saved = gr.Button("🔄", elem_id="refresh_config_states", min_width=40, elem_classes=["tool"])
                restore_type = gr.Radio(label="State to restore", choices=["extensions", "webui", "both"],
                                        value="extensions", elem_id="extension_backup_restore_type")
                restore = gr.Button("Restore Selected Config", variant="primary", elem_id="extension_backup_restore")
            with gr.Row(elem_id="extensions_backup_top_row2"):
                save_name = gr.Textbox("", placeholder="Config Name", show_label=False,
                                       elem_id="extension_backup_name")
                save = gr.Button("Save Current Config", elem_id="extension_backup_save")
            states_info = gr.HTML("", elem_id="extension_backup_info")
            states_table = gr.HTML("Loading...", elem_id="extension_backup_table")
            save.click(lambda n: save_config_state(state, n), [save_name], [saved, states_info])
            refresh_saved.click(lambda: gr.update(choices=config_state_choices(state)), None, saved,
                                show_progress="hidden")
            # A1111 asks the browser to confirm a restore; the restore_type "webui" is refused (see actions)
            restore.click(lambda n, t: restore_config_state(state, n, t), [saved, restore_type], states_info,
                          js="(n, t) => n === 'Current' || confirm('Restore the selected config and restart?') ? [n, t] : ['', t]")
            saved.change(lambda n: config_state_table(state, n), [saved], states_table, show_progress="hidden")

    def on_load():
        extensions, names, enabled_now, updatable = _installed_controls(state)
        return (extension_table(state, extensions), gr.update(choices=names, value=enabled_now),
                gr.update(choices=updatable, value=updatable), gr.update(choices=config_state_choices(state)),
                config_state_table(state, "Current"), gr.update(value=_apply_label(state)))

    return on_load, [table, enabled, update, saved, states_table, apply]


def _apply_label(state) -> str:
    """A1111's label: it restarts when it can (launch.py marks the server restartable after the page is built, so
    the label is read again on every page load), else it quits."""
    return "Apply and restart UI" if state.server.restartable else "Apply and quit"


def install_extension(state, url, dirname=None, branch=None) -> str:
    """Install from a URL into this server's extensions folder (A1111 install_extension_from_url)."""
    extensions = current_extensions(state)
    for ext in extensions:
        ext.read_info_from_repo()
    return ext_install.install_from_url(
        url, extensions_dir=state.config.extensions_dir, tmp_root=os.path.join(state.config.data_dir, "tmp"),
        installed_remotes=[e.remote for e in extensions], access_disabled=_access_disabled(state),
        dirname=dirname, branch=branch)
