"""A1111's command-line flags -> a frozen ``Config`` with every path resolved.

Clients, launchers and users' scripts pass AUTOMATIC1111 v1.10.1 flags (``--api``, ``--nowebui``, ``--api-auth``,
``--data-dir`` ...) and set ``COMMANDLINE_ARGS``; we accept the same names, with the same argparse ``dest`` names, so
``/sdapi/v1/cmd-flags`` can report them under A1111's keys and existing start scripts keep working.

Nothing happens at import: the parser is built inside ``build_parser()`` and only ``parse()`` reads argv or the
environment (house rule 2). The result is immutable; everything that needs a flag receives the ``Config``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

#: A1111's UI port (gradio's default) and the API-only port (webui.py:api_only uses 7861 when --port is absent).
DEFAULT_UI_PORT = 7860
DEFAULT_API_PORT = 7861

#: The name shown in usage and error messages: users start the server with ``python launch.py``.
PROG = "launch.py"

#: A1111's folder layout under ``--models-dir`` (modules/paths_internal.py and the model loaders).
CHECKPOINTS_SUBDIR = "Stable-diffusion"
VAE_SUBDIR = "VAE"
LORA_SUBDIR = "Lora"
ESRGAN_SUBDIR = "ESRGAN"
CONTROLNET_SUBDIR = "ControlNet"
HYPERNETWORKS_SUBDIR = "hypernetworks"


class ConfigError(SystemExit):
    """The command line (or ``COMMANDLINE_ARGS``) is unusable.

    A ``SystemExit`` on purpose: A1111 stops at startup with argparse's message, and so do we when nothing catches
    it (Python prints the message and exits with status 1). ``launch.py`` may catch it to print it its own way.
    ``message`` holds the text; ``str(error)`` gives the same.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class _Parser(argparse.ArgumentParser):
    """argparse that raises ``ConfigError`` instead of printing usage and calling ``sys.exit(2)``.

    Only errors are redirected; ``--help`` still prints and exits 0 through ``ArgumentParser.exit``.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{self.prog}: error: {message}. See `{self.prog} --help` for the list of flags.")


# --------------------------------------------------------------------------------------------------------------------
# Flags that A1111 v1.10.1 (or one of its built-in extensions) accepts and that have no field of their own here. Most
# change things this server does not have (installer steps, gradio tunnels ...); a few are read where they act, with
# ``Config.extra``: the attention flags (webui/core/models/attention.py), --medvram-sdxl and --opt-channelslast
# (webui/core/devices.py), --vae-path, --textual-inversion-templates-dir. Accepting
# them keeps users' existing COMMANDLINE_ARGS (``--xformers --skip-torch-cuda-test`` is typical) from failing; their
# values are kept in ``Config.extra_flags`` and reported by ``cmd_flags()`` like A1111 does.
# (flag, argparse keyword arguments); defaults are A1111's where they are not paths under the install folder.
# --------------------------------------------------------------------------------------------------------------------
_STORE_TRUE: dict[str, Any] = {"action": "store_true"}
_STR: dict[str, Any] = {"type": str, "default": None}
_COMPAT_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("-f", _STORE_TRUE),
    ("--update-all-extensions", _STORE_TRUE),
    ("--skip-python-version-check", _STORE_TRUE),
    ("--skip-torch-cuda-test", _STORE_TRUE),
    ("--reinstall-xformers", _STORE_TRUE),
    ("--reinstall-torch", _STORE_TRUE),
    ("--update-check", _STORE_TRUE),
    ("--test-server", _STORE_TRUE),
    ("--log-startup", _STORE_TRUE),
    ("--skip-prepare-environment", _STORE_TRUE),
    ("--skip-install", _STORE_TRUE),
    ("--dump-sysinfo", _STORE_TRUE),
    ("--loglevel", _STR),
    ("--do-not-download-clip", _STORE_TRUE),
    ("--config", _STR),
    ("--gfpgan-dir", _STR),
    ("--gfpgan-model", _STR),
    ("--no-progressbar-hiding", _STORE_TRUE),
    ("--max-batch-count", {"type": int, "default": 16}),
    ("--textual-inversion-templates-dir", _STR),
    ("--localizations-dir", _STR),
    ("--medvram-sdxl", _STORE_TRUE),
    ("--lowram", _STORE_TRUE),
    ("--always-batch-cond-uncond", _STORE_TRUE),
    ("--unload-gfpgan", _STORE_TRUE),
    ("--upcast-sampling", _STORE_TRUE),
    ("--share", _STORE_TRUE),
    ("--ngrok", _STR),
    ("--ngrok-region", {"type": str, "default": ""}),
    ("--ngrok-options", _STR),
    ("--codeformer-models-path", _STR),
    ("--gfpgan-models-path", _STR),
    ("--bsrgan-models-path", _STR),
    ("--realesrgan-models-path", _STR),
    ("--dat-models-path", _STR),
    ("--clip-models-path", _STR),
    ("--ldsr-models-path", _STR),
    ("--scunet-models-path", _STR),
    ("--swinir-models-path", _STR),
    ("--lyco-dir-backcompat", _STR),
    ("--xformers", _STORE_TRUE),
    ("--force-enable-xformers", _STORE_TRUE),
    ("--xformers-flash-attention", _STORE_TRUE),
    ("--deepdanbooru", _STORE_TRUE),
    ("--opt-split-attention", _STORE_TRUE),
    ("--opt-sub-quad-attention", _STORE_TRUE),
    ("--sub-quad-q-chunk-size", {"type": int, "default": 1024}),
    ("--sub-quad-kv-chunk-size", {"type": int, "default": None}),
    ("--sub-quad-chunk-threshold", {"type": int, "default": None}),
    ("--opt-split-attention-invokeai", _STORE_TRUE),
    ("--opt-split-attention-v1", _STORE_TRUE),
    ("--opt-sdp-attention", _STORE_TRUE),
    ("--opt-sdp-no-mem-attention", _STORE_TRUE),
    ("--disable-opt-split-attention", _STORE_TRUE),
    ("--disable-nan-check", _STORE_TRUE),
    ("--use-ipex", _STORE_TRUE),
    ("--disable-model-loading-ram-optimization", _STORE_TRUE),
    ("--show-negative-prompt", _STORE_TRUE),
    ("--ui-config-file", _STR),
    ("--gradio-debug", _STORE_TRUE),
    ("--gradio-img2img-tool", _STR),
    ("--gradio-inpaint-tool", _STR),
    ("--gradio-allowed-path", {"action": "append", "default": []}),
    ("--opt-channelslast", _STORE_TRUE),
    ("--autolaunch", _STORE_TRUE),
    ("--theme", _STR),
    ("--use-textbox-seed", _STORE_TRUE),
    ("--disable-console-progressbars", _STORE_TRUE),
    ("--enable-console-prompts", _STORE_TRUE),
    ("--vae-path", _STR),
    ("--disable-safe-unpickle", _STORE_TRUE),
    ("--ui-debug-mode", _STORE_TRUE),
    ("--administrator", _STORE_TRUE),
    ("--disable-tls-verify", {"action": "store_false", "default": None}),
    ("--gradio-queue", {"action": "store_true", "default": True}),
    ("--no-gradio-queue", _STORE_TRUE),
    ("--skip-version-check", _STORE_TRUE),
    ("--no-download-sd-model", _STORE_TRUE),
    ("--add-stop-route", _STORE_TRUE),
    ("--unix-filenames-sanitization", _STORE_TRUE),
    ("--filenames-max-length", {"type": int, "default": 128}),
)


def build_parser() -> argparse.ArgumentParser:
    """The A1111-compatible parser, built fresh on each call (no module-level parser: nothing runs at import).

    Path flags default to ``None`` here; ``parse()`` fills in A1111's defaults relative to ``--data-dir`` and
    ``--models-dir``, which is what A1111's two-stage parse (paths_internal.py, then cmd_args.py) amounts to.
    """
    p = _Parser(
        prog=PROG,
        description="Stable Diffusion web UI / API server (AUTOMATIC1111 v1.10.1 compatible).",
        epilog="Flags may also come from the COMMANDLINE_ARGS environment variable (parsed after these). "
        "A1111's other flags (--xformers, --skip-torch-cuda-test, --theme, ...) are accepted and have no effect.",
    )

    server = p.add_argument_group("server and API")
    server.add_argument("--api", action="store_true", help="serve /sdapi/v1/* next to the web UI")
    server.add_argument("--nowebui", action="store_true", help="serve only the API, no UI (port default 7861)")
    server.add_argument("--listen", action="store_true", help="bind 0.0.0.0 so other machines can connect")
    server.add_argument("--server-name", type=str, default=None, help="host name/address to bind (beats --listen)")
    server.add_argument("--port", type=int, default=None, help="port (default 7860, or 7861 with --nowebui)")
    server.add_argument("--api-auth", type=str, default=None, help='HTTP Basic for the API: "u1:p1,u2:p2"')
    server.add_argument("--api-log", action="store_true", help="log every /sdapi request")
    server.add_argument("--api-server-stop", action="store_true", help="register server-stop/-restart/-kill routes")
    server.add_argument("--gradio-auth", type=str, default=None, help='UI login: "u1:p1,u2:p2"')
    server.add_argument("--gradio-auth-path", type=str, default=None, help="file with UI logins, same format")
    server.add_argument("--cors-allow-origins", type=str, default=None, help="allowed CORS origins, comma-separated")
    server.add_argument("--cors-allow-origins-regex", type=str, default=None, help="allowed CORS origins, one regex")
    server.add_argument("--subpath", type=str, default=None, help="serve under /SUBPATH (reverse proxies)")
    server.add_argument("--timeout-keep-alive", type=int, default=30, help="HTTP keep-alive seconds (default 30)")
    server.add_argument("--tls-keyfile", type=str, default=None, help="TLS private key (needs --tls-certfile)")
    server.add_argument("--tls-certfile", type=str, default=None, help="TLS certificate (needs --tls-keyfile)")

    paths = p.add_argument_group("paths (relative paths are taken from the current directory)")
    paths.add_argument("--data-dir", type=str, default=None, help="base of all user data (default: install folder)")
    paths.add_argument("--models-dir", type=str, default=None, help="base of model folders (default: DATA/models)")
    paths.add_argument("--ckpt-dir", type=str, default=None, help="extra folder with checkpoints")
    paths.add_argument("--ckpt", type=str, default=None, help="checkpoint to add and load first")
    paths.add_argument("--vae-dir", type=str, default=None, help="extra folder with VAE files")
    paths.add_argument("--lora-dir", type=str, default=None, help="LoRA folder (default: MODELS/Lora)")
    paths.add_argument("--embeddings-dir", type=str, default=None, help="embeddings (default: DATA/embeddings)")
    paths.add_argument("--hypernetwork-dir", type=str, default=None, help="default: MODELS/hypernetworks")
    paths.add_argument("--esrgan-models-path", type=str, default=None, help="ESRGAN models (default: MODELS/ESRGAN)")
    paths.add_argument("--ui-settings-file", type=str, default=None, help="settings file (default: DATA/config.json)")
    paths.add_argument(
        "--styles-file", type=str, action="append", default=[],
        help="styles CSV; may be given more than once (default: DATA/styles.csv)",
    )

    behaviour = p.add_argument_group("behaviour")
    behaviour.add_argument("--skip-load-model-at-start", action="store_true", help="API-only: load no model at start")
    behaviour.add_argument("--no-hashing", action="store_true", help="do not compute checkpoint sha256 hashes")
    behaviour.add_argument("--no-prompt-history", action="store_true", help="do not write params.txt")
    behaviour.add_argument("--freeze-settings", action="store_true", help="refuse changes to settings")
    behaviour.add_argument("--freeze-settings-in-sections", type=str, default=None,
                           help="refuse changes to settings in these sections (comma-separated)")
    behaviour.add_argument("--freeze-specific-settings", type=str, default=None,
                           help="refuse changes to these settings (comma-separated keys)")
    behaviour.add_argument("--hide-ui-dir-config", action="store_true", help="hide and freeze folder settings")
    behaviour.add_argument("--allow-code", action="store_true", help='enable the "Custom code" script')
    behaviour.add_argument("--enable-insecure-extension-access", action="store_true",
                           help="allow installing extensions even with --listen/--share/--server-name")
    behaviour.add_argument("--disable-all-extensions", action="store_true", help="load no extensions")
    behaviour.add_argument("--disable-extra-extensions", action="store_true", help="load only built-in extensions")
    behaviour.add_argument("--run-extension-installers", action="store_true",
                           help="run the extensions' install.py at start (never by default; ignored when $CI is set)")

    device = p.add_argument_group("device")
    device.add_argument("--use-cpu", nargs="+", type=str.lower, default=[],
                        help="run these modules on the CPU: all, sd, interrogate, esrgan, ...")
    # default None so that an explicit --precision autocast is known (on CPU it turns on bfloat16 autocast);
    # Config.precision is "autocast" either way, as A1111 reports it
    device.add_argument("--precision", type=str, choices=["full", "half", "autocast"], default=None,
                        help="evaluate at this precision (default autocast; given on CPU: bfloat16 autocast)")
    device.add_argument("--no-half", action="store_true", help="keep the model in 32-bit floats")
    device.add_argument("--no-half-vae", action="store_true", help="keep the VAE in 32-bit floats")
    device.add_argument("--medvram", action="store_true", help="trade some speed for less VRAM")
    device.add_argument("--lowvram", action="store_true", help="trade a lot of speed for much less VRAM")
    device.add_argument("--device-id", type=str, default=None, help="CUDA device index to use")

    compat = p.add_argument_group("accepted for A1111 compatibility; no effect here")
    for flag, kwargs in _COMPAT_FLAGS:
        compat.add_argument(flag, help=argparse.SUPPRESS, **kwargs)
    return p


def _compat_dests() -> tuple[str, ...]:
    """argparse dest names of the compatibility-only flags, in table order."""
    return tuple(flag.lstrip("-").replace("-", "_") for flag, _ in _COMPAT_FLAGS)


def default_install_dir() -> str:
    """The repository root: the folder holding the ``webui`` package (A1111's ``script_path``)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True, kw_only=True)
class Config:
    """The launch flags under their A1111 dest names, with every path made absolute.

    Path fields are already resolved: given ones against the working directory at parse time, missing ones to
    A1111's defaults under ``data_dir`` / ``models_dir``. ``extra_flags`` holds the compatibility-only flags
    (``xformers``, ``skip_torch_cuda_test``, ...) as ``(dest, value)`` pairs; read them with ``extra()``.
    """

    install_dir: str

    # server and API
    api: bool = False
    nowebui: bool = False
    listen: bool = False
    server_name: str | None = None
    port: int | None = None
    api_auth: str | None = None
    api_log: bool = False
    api_server_stop: bool = False
    gradio_auth: str | None = None
    gradio_auth_path: str | None = None
    cors_allow_origins: str | None = None
    cors_allow_origins_regex: str | None = None
    subpath: str | None = None
    timeout_keep_alive: int = 30
    tls_keyfile: str | None = None
    tls_certfile: str | None = None

    # paths (absolute)
    data_dir: str
    models_dir: str
    ckpt_dir: str | None = None
    ckpt: str
    vae_dir: str | None = None
    lora_dir: str
    embeddings_dir: str
    hypernetwork_dir: str
    esrgan_models_path: str
    ui_settings_file: str
    styles_files: tuple[str, ...]

    # behaviour
    skip_load_model_at_start: bool = False
    no_hashing: bool = False
    no_prompt_history: bool = False
    freeze_settings: bool = False
    freeze_settings_in_sections: str | None = None
    freeze_specific_settings: str | None = None
    hide_ui_dir_config: bool = False
    allow_code: bool = False
    enable_insecure_extension_access: bool = False
    disable_all_extensions: bool = False
    disable_extra_extensions: bool = False
    run_extension_installers: bool = False

    # device
    use_cpu: tuple[str, ...] = ()
    precision: str = "autocast"
    precision_given: bool = False  # --precision was on the command line (CPU: explicit autocast means bfloat16)
    no_half: bool = False
    no_half_vae: bool = False
    medvram: bool = False
    lowvram: bool = False
    device_id: str | None = None

    extra_flags: tuple[tuple[str, Any], ...] = ()
    # flags the extensions' preload.py added (dest, value), and the preloads that failed
    # (extension name, stage, file, message, traceback)
    extension_flags: tuple[tuple[str, Any], ...] = ()
    extension_preload_errors: tuple[tuple[str, Any], ...] = ()

    # ---- derived values ---------------------------------------------------------------------------------------

    @property
    def effective_port(self) -> int:
        """``--port``, else 7861 in API-only mode and 7860 with the UI (A1111's defaults)."""
        if self.port is not None:
            return self.port
        return DEFAULT_API_PORT if self.nowebui else DEFAULT_UI_PORT

    @property
    def server_host(self) -> str:
        """Bind address: ``--server-name``, else 0.0.0.0 with ``--listen``, else 127.0.0.1.

        A1111 passes ``host=None`` to uvicorn under ``--nowebui`` without ``--listen``, which binds every interface
        by accident (spec 1.1, 17.12); we keep the documented intent, localhost unless ``--listen``.
        """
        if self.server_name:
            return self.server_name
        return "0.0.0.0" if self.listen else "127.0.0.1"

    @property
    def api_enabled(self) -> bool:
        """Whether /sdapi/v1/* is served: ``--api`` with the UI, always in API-only mode."""
        return self.api or self.nowebui

    @property
    def is_non_local(self) -> bool:
        """A1111's ``webui_is_non_local``: reachable from other machines (--share, --listen, --ngrok, --server-name)."""
        return bool(self.extra("share") or self.listen or self.extra("ngrok") or self.server_name)

    @property
    def extension_access_disabled(self) -> bool:
        """A1111's ``disable_extension_access``: no extension installs on a non-local instance unless allowed."""
        return self.is_non_local and not self.enable_insecure_extension_access

    @property
    def styles_file(self) -> str:
        """The main styles CSV: the first ``--styles-file`` (A1111 saves new styles there), else DATA/styles.csv."""
        return self.styles_files[0]

    @property
    def checkpoints_dir(self) -> str:
        return os.path.join(self.models_dir, CHECKPOINTS_SUBDIR)

    @property
    def vae_models_dir(self) -> str:
        return os.path.join(self.models_dir, VAE_SUBDIR)

    @property
    def esrgan_dir(self) -> str:
        """ESRGAN/spandrel upscaler folder: ``--esrgan-models-path`` if given, else MODELS/ESRGAN."""
        return self.esrgan_models_path

    @property
    def controlnet_dir(self) -> str:
        return os.path.join(self.models_dir, CONTROLNET_SUBDIR)

    @property
    def outputs_dir(self) -> str:
        return os.path.join(self.data_dir, "outputs")

    @property
    def extensions_dir(self) -> str:
        return os.path.join(self.data_dir, "extensions")

    @property
    def hash_cache_file(self) -> str:
        """A1111's sha256 cache (``cache.json`` in the data folder), shared format so hashes carry over."""
        return os.path.join(self.data_dir, "cache.json")

    # ---- helpers ----------------------------------------------------------------------------------------------

    def extra(self, dest: str, default: Any = None) -> Any:
        """Value of a compatibility-only flag by dest name (``config.extra("xformers")``)."""
        for name, value in self.extra_flags:
            if name == dest:
                return value
        return default

    def uses_cpu_for(self, task: str) -> bool:
        """A1111's devices.get_device_for: ``--use-cpu all`` or ``--use-cpu <task>`` puts that task on the CPU."""
        return "all" in self.use_cpu or task.lower() in self.use_cpu

    def api_auth_users(self) -> dict[str, str]:
        """``--api-auth`` as user -> password, exactly as A1111's Api.__init__ reads it (spec 2).

        Split on ``,``, each item on ``:`` into exactly two parts, no trimming; anything else (a password holding
        ``:``, an item without ``:``, a trailing comma) is an error, as it stops A1111's startup.
        """
        return _parse_api_auth(self.api_auth)

    def gradio_auth_users(self) -> dict[str, str]:
        """UI logins from ``--gradio-auth`` and the ``--gradio-auth-path`` file (read now), as A1111 reads them.

        Items are comma-separated (file: per line too), trimmed, empty ones skipped, split at the first ``:`` so a
        password may contain ``:``. Later entries for the same user win, as in gradio's login dict.
        """
        users = _parse_gradio_auth(self.gradio_auth or "", source="--gradio-auth")
        if self.gradio_auth_path:
            try:
                with open(self.gradio_auth_path, encoding="utf8") as fh:
                    text = fh.read()
            except OSError as exc:
                raise ConfigError(f"--gradio-auth-path: cannot read {self.gradio_auth_path}: {exc}") from exc
            users.update(_parse_gradio_auth(text.replace("\n", ","), source=self.gradio_auth_path))
        return users

    def cmd_flags(self) -> dict[str, Any]:
        """Every argparse dest with its value, for GET /sdapi/v1/cmd-flags (spec 11.13), in parser order.

        Paths are reported resolved (A1111 reports its computed defaults too), ``styles_file`` as a list and
        ``use_cpu`` as a list (A1111's shapes), ``port`` as given (an int or None; spec correction 3).
        """
        flags: dict[str, Any] = {}
        extras = dict(self.extra_flags)
        for action in build_parser()._actions:
            dest = action.dest
            if dest == "help":
                continue
            if dest == "styles_file":
                value: Any = list(self.styles_files)
            elif dest in extras:
                value = extras[dest]
            else:
                value = getattr(self, dest)
            flags[dest] = list(value) if isinstance(value, tuple) else value
        for dest, value in self.extension_flags:  # added by extensions' preload.py, after ours (A1111's order)
            flags[dest] = list(value) if isinstance(value, tuple) else value
        return flags


# ---- parsing ----------------------------------------------------------------------------------------------------


def parse(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    install_dir: str | None = None,
) -> Config:
    """Parse A1111 flags into a ``Config``.

    ``argv`` defaults to ``sys.argv[1:]`` and ``environ`` to ``os.environ``. As A1111 does
    (paths_internal.py: ``sys.argv += shlex.split(COMMANDLINE_ARGS)``), the shlex-split ``COMMANDLINE_ARGS`` come
    after the real arguments, so for a flag given in both places the environment's value wins. With
    ``IGNORE_CMD_ARGS_ERRORS`` set, unknown flags are ignored (A1111's shared_cmd_options.py); otherwise they raise
    ``ConfigError`` naming them. ``--help`` prints the help and raises ``SystemExit(0)`` as usual.

    Relative paths are resolved against the current working directory; ``install_dir`` (default: the repository
    root) is where ``--data-dir`` points when not given and where the default ``--ckpt`` (``model.ckpt``) lives.
    Nothing is created on disk: see ``ensure_data_dirs``.
    """
    env = os.environ if environ is None else environ
    args = list(sys.argv[1:] if argv is None else argv)
    env_args_text = env.get("COMMANDLINE_ARGS", "")
    try:
        env_args = shlex.split(env_args_text)
    except ValueError as exc:  # unbalanced quotes
        raise ConfigError(f"COMMANDLINE_ARGS cannot be split ({exc}): {env_args_text!r}") from exc
    all_args = args + env_args

    parser = build_parser()
    preload_errors = _preload_extensions(parser, all_args, install_dir)
    try:
        if env.get("IGNORE_CMD_ARGS_ERRORS") is not None:
            ns, _unknown = parser.parse_known_args(all_args)
        else:
            ns = parser.parse_args(all_args)
    except ConfigError as exc:
        if env_args:
            raise ConfigError(f"{exc.message} (arguments came from the command line and from "
                              f"COMMANDLINE_ARGS={env_args_text!r})") from None
        raise

    config = _config_from_namespace(ns, install_dir=install_dir)
    ours = {a.dest for a in build_parser()._actions}
    added = tuple((a.dest, _freeze(getattr(ns, a.dest))) for a in parser._actions
                  if a.dest not in ours and hasattr(ns, a.dest))
    if added or preload_errors:
        import dataclasses

        config = dataclasses.replace(config, extension_flags=added, extension_preload_errors=tuple(
            (name, r.stage, r.file, r.message, r.traceback) for name, r in preload_errors))
    return config


def _preload_extensions(parser: argparse.ArgumentParser, args: list[str], install_dir: str | None) -> list:
    """A1111 shared_cmd_options.py: the extensions' ``preload(parser)`` add their flags before argv is parsed. The
    folders come from a first look at --data-dir / --ui-settings-file and the disable flags."""
    from webui.plugins.extension_loader import preload_extensions

    pre = argparse.ArgumentParser(add_help=False)
    for flag in ("--data-dir", "--ui-settings-file"):
        pre.add_argument(flag, type=str, default=None)
    for flag in ("--disable-all-extensions", "--disable-extra-extensions"):
        pre.add_argument(flag, action="store_true")
    ns, _ = pre.parse_known_args(args)
    install = os.path.abspath(install_dir) if install_dir is not None else default_install_dir()
    data_dir = _abs(ns.data_dir) or install
    return preload_extensions(
        parser, extensions_dir=os.path.join(data_dir, "extensions"), install_dir=install,
        settings_file=_abs(ns.ui_settings_file) or os.path.join(data_dir, "config.json"),
        disable_all=ns.disable_all_extensions, disable_extra=ns.disable_extra_extensions)


def _abs(path: str | None) -> str | None:
    """Absolute, normalised path against the current working directory (A1111's ``normalized_filepath``)."""
    return None if path is None else os.path.abspath(path)


def _freeze(value: Any) -> Any:
    """Lists (``action="append"``, ``nargs``) become tuples so the frozen Config stays hashable."""
    return tuple(value) if isinstance(value, list) else value


def _config_from_namespace(ns: argparse.Namespace, *, install_dir: str | None) -> Config:
    """Resolve defaults the way A1111's paths_internal.py/cmd_args.py do and freeze the result."""
    install = os.path.abspath(install_dir) if install_dir is not None else default_install_dir()
    data_dir = _abs(ns.data_dir) or install
    models_dir = _abs(ns.models_dir) or os.path.join(data_dir, "models")

    _parse_api_auth(ns.api_auth)  # A1111 fails at startup on a malformed --api-auth; fail here, before serving
    _parse_gradio_auth(ns.gradio_auth or "", source="--gradio-auth")

    extra = tuple((dest, _freeze(getattr(ns, dest))) for dest in _compat_dests())
    return Config(
        install_dir=install,
        api=ns.api,
        nowebui=ns.nowebui,
        listen=ns.listen,
        server_name=ns.server_name,
        port=ns.port,
        api_auth=ns.api_auth,
        api_log=ns.api_log,
        api_server_stop=ns.api_server_stop,
        gradio_auth=ns.gradio_auth,
        gradio_auth_path=_abs(ns.gradio_auth_path),
        cors_allow_origins=ns.cors_allow_origins,
        cors_allow_origins_regex=ns.cors_allow_origins_regex,
        subpath=ns.subpath,
        timeout_keep_alive=ns.timeout_keep_alive,
        tls_keyfile=_abs(ns.tls_keyfile),
        tls_certfile=_abs(ns.tls_certfile),
        data_dir=data_dir,
        models_dir=models_dir,
        ckpt_dir=_abs(ns.ckpt_dir),
        ckpt=_abs(ns.ckpt) or os.path.join(install, "model.ckpt"),
        vae_dir=_abs(ns.vae_dir),
        lora_dir=_abs(ns.lora_dir) or os.path.join(models_dir, LORA_SUBDIR),
        embeddings_dir=_abs(ns.embeddings_dir) or os.path.join(data_dir, "embeddings"),
        hypernetwork_dir=_abs(ns.hypernetwork_dir) or os.path.join(models_dir, HYPERNETWORKS_SUBDIR),
        esrgan_models_path=_abs(ns.esrgan_models_path) or os.path.join(models_dir, ESRGAN_SUBDIR),
        ui_settings_file=_abs(ns.ui_settings_file) or os.path.join(data_dir, "config.json"),
        styles_files=tuple(os.path.abspath(p) for p in ns.styles_file) or (os.path.join(data_dir, "styles.csv"),),
        skip_load_model_at_start=ns.skip_load_model_at_start,
        no_hashing=ns.no_hashing,
        no_prompt_history=ns.no_prompt_history,
        freeze_settings=ns.freeze_settings,
        freeze_settings_in_sections=ns.freeze_settings_in_sections,
        freeze_specific_settings=ns.freeze_specific_settings,
        hide_ui_dir_config=ns.hide_ui_dir_config,
        allow_code=ns.allow_code,
        enable_insecure_extension_access=ns.enable_insecure_extension_access,
        disable_all_extensions=ns.disable_all_extensions,
        disable_extra_extensions=ns.disable_extra_extensions,
        run_extension_installers=ns.run_extension_installers,
        use_cpu=tuple(ns.use_cpu),
        precision=ns.precision or "autocast",
        precision_given=ns.precision is not None,
        no_half=ns.no_half,
        no_half_vae=ns.no_half_vae,
        medvram=ns.medvram,
        lowvram=ns.lowvram,
        device_id=ns.device_id,
        extra_flags=extra,
    )


def _parse_api_auth(text: str | None) -> dict[str, str]:
    """A1111's ``--api-auth`` reading (spec 2); raises ``ConfigError`` where A1111's startup would crash."""
    users: dict[str, str] = {}
    if not text:
        return users
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 2:
            raise ConfigError(
                f"--api-auth: {item!r} is not 'user:password' (credentials are separated by ',' and each must "
                f"contain exactly one ':'; a password cannot contain ':' or ',')"
            )
        users[parts[0]] = parts[1]
    return users


def _parse_gradio_auth(text: str, *, source: str) -> dict[str, str]:
    """A1111's gradio credential reading: comma-separated, trimmed, empty items skipped, split at the first ':'."""
    users: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep:
            raise ConfigError(f"{source}: {item!r} is not 'user:password'")
        users[user] = password
    return users


# ---- data folders -----------------------------------------------------------------------------------------------


def ensure_data_dirs(config: Config) -> tuple[str, ...]:
    """Create A1111's data layout (idempotent) and return the folders, in creation order.

    models/Stable-diffusion, models/VAE, models/Lora, models/ESRGAN, models/ControlNet, embeddings, outputs and
    extensions, each at its resolved location (so ``--models-dir``/``--lora-dir`` overrides are honoured). Extra
    folders named by ``--ckpt-dir``/``--vae-dir`` are the user's and are not created. Kept out of ``parse()`` so
    parsing never touches the disk.
    """
    folders = (
        config.checkpoints_dir,
        config.vae_models_dir,
        config.lora_dir,
        config.esrgan_dir,
        config.controlnet_dir,
        config.embeddings_dir,
        config.outputs_dir,
        config.extensions_dir,
    )
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
    return folders
