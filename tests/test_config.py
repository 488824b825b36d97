"""webui.config: A1111 flag names, defaults, COMMANDLINE_ARGS, path resolution, auth parsing, data folders."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from webui.config import Config, ConfigError, ensure_data_dirs, parse

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cfg(*argv: str, env: dict[str, str] | None = None, install_dir: str | None = None) -> Config:
    """Parse with an explicit (empty by default) environment so the developer's COMMANDLINE_ARGS cannot leak in."""
    return parse(list(argv), env or {}, install_dir=install_dir)


# ---- ports and hosts ---------------------------------------------------------------------------------------------


def test_default_port_is_7860_with_ui():
    c = cfg()
    assert c.port is None
    assert c.effective_port == 7860


def test_nowebui_defaults_to_7861():
    assert cfg("--nowebui").effective_port == 7861


@pytest.mark.parametrize("extra", [[], ["--nowebui"]])
def test_port_flag_wins(extra):
    c = cfg("--port", "9000", *extra)
    assert c.port == 9000
    assert c.effective_port == 9000


def test_server_host_rules():
    assert cfg().server_host == "127.0.0.1"
    # deliberate: A1111 binds all interfaces by accident here (spec 1.1); we keep localhost
    assert cfg("--nowebui").server_host == "127.0.0.1"
    assert cfg("--listen").server_host == "0.0.0.0"
    assert cfg("--listen", "--server-name", "example.local").server_host == "example.local"
    assert cfg("--server-name", "10.1.2.3").server_host == "10.1.2.3"


def test_api_enabled():
    assert not cfg().api_enabled
    assert cfg("--api").api_enabled
    assert cfg("--nowebui").api_enabled


def test_scalar_defaults_match_a1111():
    c = cfg()
    assert c.timeout_keep_alive == 30
    assert c.precision == "autocast"
    assert c.use_cpu == ()
    assert c.api is c.nowebui is c.listen is c.no_hashing is c.freeze_settings is False
    assert c.server_name is None and c.api_auth is None and c.ckpt_dir is None and c.vae_dir is None


def test_device_flags():
    c = cfg("--use-cpu", "ALL", "sd", "--precision", "half", "--no-half", "--no-half-vae", "--medvram",
            "--lowvram", "--device-id", "1")
    assert c.use_cpu == ("all", "sd")  # lower-cased like A1111 (type=str.lower)
    assert c.precision == "half"
    assert c.no_half and c.no_half_vae and c.medvram and c.lowvram
    assert c.device_id == "1"
    assert c.uses_cpu_for("interrogate")  # "all" covers every task
    only_sd = cfg("--use-cpu", "sd")
    assert only_sd.uses_cpu_for("sd") and not only_sd.uses_cpu_for("esrgan")


def test_bad_precision_and_bad_int_raise_config_error():
    with pytest.raises(ConfigError, match="--precision"):
        cfg("--precision", "double")
    with pytest.raises(ConfigError, match="--port"):
        cfg("--port", "eighty")


# ---- paths -------------------------------------------------------------------------------------------------------


def test_default_paths_under_install_dir(tmp_path):
    c = cfg(install_dir=str(tmp_path))
    root = str(tmp_path)
    assert c.install_dir == root
    assert c.data_dir == root
    assert c.models_dir == os.path.join(root, "models")
    assert c.checkpoints_dir == os.path.join(root, "models", "Stable-diffusion")
    assert c.vae_models_dir == os.path.join(root, "models", "VAE")
    assert c.lora_dir == os.path.join(root, "models", "Lora")
    assert c.esrgan_dir == os.path.join(root, "models", "ESRGAN")
    assert c.controlnet_dir == os.path.join(root, "models", "ControlNet")
    assert c.hypernetwork_dir == os.path.join(root, "models", "hypernetworks")
    assert c.embeddings_dir == os.path.join(root, "embeddings")
    assert c.ui_settings_file == os.path.join(root, "config.json")
    assert c.styles_file == os.path.join(root, "styles.csv")
    assert c.outputs_dir == os.path.join(root, "outputs")
    assert c.extensions_dir == os.path.join(root, "extensions")
    assert c.hash_cache_file == os.path.join(root, "cache.json")
    assert c.ckpt == os.path.join(root, "model.ckpt")  # A1111's sd_model_file, used only if it exists


def test_install_dir_defaults_to_repo_root():
    assert cfg().install_dir == REPO_ROOT
    assert cfg().data_dir == REPO_ROOT


def test_paths_follow_data_dir(tmp_path):
    install, data = tmp_path / "install", tmp_path / "data"
    c = cfg("--data-dir", str(data), install_dir=str(install))
    assert c.data_dir == str(data)
    assert c.models_dir == str(data / "models")
    assert c.checkpoints_dir == str(data / "models" / "Stable-diffusion")
    assert c.lora_dir == str(data / "models" / "Lora")
    assert c.embeddings_dir == str(data / "embeddings")
    assert c.ui_settings_file == str(data / "config.json")
    assert c.styles_file == str(data / "styles.csv")
    assert c.outputs_dir == str(data / "outputs")
    assert c.extensions_dir == str(data / "extensions")
    assert c.hash_cache_file == str(data / "cache.json")
    assert c.ckpt == str(install / "model.ckpt")  # A1111: under the install folder, not the data folder


def test_models_dir_overrides_model_folders_only(tmp_path):
    data, models = tmp_path / "data", tmp_path / "elsewhere"
    c = cfg("--data-dir", str(data), "--models-dir", str(models))
    assert c.models_dir == str(models)
    assert c.checkpoints_dir == str(models / "Stable-diffusion")
    assert c.vae_models_dir == str(models / "VAE")
    assert c.lora_dir == str(models / "Lora")
    assert c.esrgan_dir == str(models / "ESRGAN")
    assert c.controlnet_dir == str(models / "ControlNet")
    assert c.hypernetwork_dir == str(models / "hypernetworks")
    assert c.embeddings_dir == str(data / "embeddings")  # data-dir based, unaffected
    assert c.outputs_dir == str(data / "outputs")


def test_explicit_path_flags_win(tmp_path):
    c = cfg(
        "--data-dir", str(tmp_path / "d"),
        "--lora-dir", str(tmp_path / "loras"),
        "--embeddings-dir", str(tmp_path / "emb"),
        "--hypernetwork-dir", str(tmp_path / "hn"),
        "--ui-settings-file", str(tmp_path / "s.json"),
        "--styles-file", str(tmp_path / "a.csv"),
        "--styles-file", str(tmp_path / "b.csv"),
        "--ckpt-dir", str(tmp_path / "ck"),
        "--vae-dir", str(tmp_path / "vae"),
        "--ckpt", str(tmp_path / "x.safetensors"),
    )
    assert c.lora_dir == str(tmp_path / "loras")
    assert c.embeddings_dir == str(tmp_path / "emb")
    assert c.hypernetwork_dir == str(tmp_path / "hn")
    assert c.ui_settings_file == str(tmp_path / "s.json")
    assert c.styles_files == (str(tmp_path / "a.csv"), str(tmp_path / "b.csv"))
    assert c.styles_file == str(tmp_path / "a.csv")
    assert c.ckpt_dir == str(tmp_path / "ck")
    assert c.vae_dir == str(tmp_path / "vae")
    assert c.ckpt == str(tmp_path / "x.safetensors")


def test_relative_paths_resolve_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = cfg("--data-dir", "data", "--ckpt-dir", "../ck", "--ckpt", "m/model.safetensors")
    assert c.data_dir == os.path.join(str(tmp_path), "data")
    assert c.models_dir == os.path.join(str(tmp_path), "data", "models")
    assert c.ckpt_dir == os.path.join(os.path.dirname(str(tmp_path)), "ck")  # normalised, no ".."
    assert c.ckpt == os.path.join(str(tmp_path), "m", "model.safetensors")
    assert all(os.path.isabs(p) for p in (c.data_dir, c.models_dir, c.ckpt_dir, c.ckpt))


def test_parse_touches_no_disk(tmp_path):
    cfg("--data-dir", str(tmp_path / "d"))
    assert list(tmp_path.iterdir()) == []


# ---- COMMANDLINE_ARGS --------------------------------------------------------------------------------------------


def test_commandline_args_env_is_honoured():
    c = cfg(env={"COMMANDLINE_ARGS": "--api --api-auth 'user:pa ss' --port 7000"})
    assert c.api
    assert c.api_auth == "user:pa ss"  # shlex quoting respected
    assert c.port == 7000


def test_commandline_args_come_after_argv_so_they_win():
    # A1111: sys.argv += shlex.split(COMMANDLINE_ARGS), so the environment's value is parsed last
    c = cfg("--port", "1111", "--nowebui", env={"COMMANDLINE_ARGS": "--port 2222"})
    assert c.port == 2222
    assert c.nowebui


def test_commandline_args_read_from_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("COMMANDLINE_ARGS", "--listen")
    assert parse([]).listen


def test_a1111_only_flags_are_accepted_and_reported():
    c = cfg(env={"COMMANDLINE_ARGS": "--xformers --skip-torch-cuda-test --theme dark"})
    assert c.extra("xformers") is True
    assert c.extra("skip_torch_cuda_test") is True
    assert c.extra("theme") == "dark"
    assert c.extra("no_such_flag", "fallback") == "fallback"


# ---- unknown flags -----------------------------------------------------------------------------------------------


def test_unknown_flag_raises_config_error_naming_it():
    with pytest.raises(ConfigError) as info:
        cfg("--api", "--frobnicate")
    message = str(info.value)
    assert "--frobnicate" in message
    assert "unrecognized arguments" in message
    assert "--help" in message
    assert isinstance(info.value, SystemExit)  # uncaught, it stops the program with the message


def test_unknown_flag_from_env_mentions_commandline_args():
    with pytest.raises(ConfigError) as info:
        cfg(env={"COMMANDLINE_ARGS": "--bogus-flag"})
    assert "--bogus-flag" in str(info.value)
    assert "COMMANDLINE_ARGS" in str(info.value)


def test_ignore_cmd_args_errors_env_skips_unknown_flags():
    c = cfg("--bogus", "--api", env={"IGNORE_CMD_ARGS_ERRORS": "1"})
    assert c.api


def test_help_still_works(capsys):
    with pytest.raises(SystemExit) as info:
        cfg("--help")
    assert info.value.code == 0
    assert not isinstance(info.value, ConfigError)
    out = capsys.readouterr().out
    assert "--nowebui" in out and "--api-auth" in out


# ---- auth --------------------------------------------------------------------------------------------------------


def test_api_auth_users():
    assert cfg().api_auth_users() == {}
    assert cfg("--api-auth", "alice:secret").api_auth_users() == {"alice": "secret"}
    assert cfg("--api-auth", "a:1,b:2").api_auth_users() == {"a": "1", "b": "2"}
    # no whitespace trimming, exactly like A1111
    assert cfg("--api-auth", "a:1, b:2").api_auth_users() == {"a": "1", " b": "2"}


@pytest.mark.parametrize("bad", ["alice:se:cret", "alice", "a:1,", "a:1,b"])
def test_bad_api_auth_is_a_startup_error(bad):
    with pytest.raises(ConfigError, match="--api-auth"):
        cfg("--api-auth", bad)
    # and the accessor refuses it too, should a Config be built some other way
    good = cfg()
    with pytest.raises(ConfigError, match="--api-auth"):
        dataclasses.replace(good, api_auth=bad).api_auth_users()


def test_gradio_auth_users_split_at_first_colon(tmp_path):
    c = cfg("--gradio-auth", "u1:p:with:colons, u2:p2 ,")
    assert c.gradio_auth_users() == {"u1": "p:with:colons", "u2": "p2"}
    auth_file = tmp_path / "auth.txt"
    auth_file.write_text("f1:x\n\nf2:y,f3:z:z\n", encoding="utf8")
    c2 = cfg("--gradio-auth", "u:p", "--gradio-auth-path", str(auth_file))
    assert c2.gradio_auth_users() == {"u": "p", "f1": "x", "f2": "y", "f3": "z:z"}


def test_gradio_auth_without_colon_is_an_error():
    with pytest.raises(ConfigError, match="--gradio-auth"):
        cfg("--gradio-auth", "justauser")


# ---- immutability, cmd-flags, import ----------------------------------------------------------------------------


def test_config_is_frozen():
    c = cfg()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.port = 1234  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.data_dir = "/elsewhere"  # type: ignore[misc]
    hash(c)  # hashable: every field is immutable


def test_parse_is_pure():
    assert cfg("--api", "--port", "1") == cfg("--api", "--port", "1")
    assert cfg("--api") != cfg()


def test_cmd_flags_has_every_dest_under_a1111_names(tmp_path):
    c = cfg("--nowebui", "--port", "7861", "--api-auth", "u:p", "--use-cpu", "all", "--data-dir", str(tmp_path))
    flags = c.cmd_flags()
    for key in ("api", "nowebui", "listen", "server_name", "port", "api_auth", "api_log", "api_server_stop",
                "gradio_auth", "gradio_auth_path", "data_dir", "models_dir", "ckpt_dir", "ckpt", "vae_dir",
                "lora_dir", "embeddings_dir", "hypernetwork_dir", "ui_settings_file", "styles_file",
                "skip_load_model_at_start", "no_hashing", "no_prompt_history", "cors_allow_origins",
                "cors_allow_origins_regex", "subpath", "timeout_keep_alive", "tls_keyfile", "tls_certfile",
                "freeze_settings", "hide_ui_dir_config", "allow_code", "enable_insecure_extension_access",
                "use_cpu", "precision", "no_half", "no_half_vae", "medvram", "lowvram", "device_id",
                "xformers", "skip_torch_cuda_test"):
        assert key in flags, key
    assert "help" not in flags
    assert flags["port"] == 7861  # as given, an int
    assert flags["api_auth"] == "u:p"  # A1111 exposes it in clear text
    assert flags["nowebui"] is True and flags["api"] is False
    assert flags["use_cpu"] == ["all"]
    assert flags["styles_file"] == [str(tmp_path / "styles.csv")]
    assert flags["data_dir"] == str(tmp_path)
    assert flags["timeout_keep_alive"] == 30
    assert cfg().cmd_flags()["port"] is None


def test_non_local_disables_extension_access():
    assert not cfg().extension_access_disabled
    assert cfg("--listen").extension_access_disabled
    assert cfg("--share").is_non_local
    assert not cfg("--listen", "--enable-insecure-extension-access").extension_access_disabled


def test_import_parses_nothing():
    # A fresh interpreter with a hostile argv: importing must neither fail nor print help nor exit.
    code = (
        "import sys; sys.argv = ['launch.py', '--definitely-not-a-flag', '--help'];"
        "import webui.config as c; print('imported', hasattr(c, 'parse'))"
    )
    env = dict(os.environ, COMMANDLINE_ARGS="--also-not-a-flag")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported True"


# ---- data folders ------------------------------------------------------------------------------------------------


def test_ensure_data_dirs_creates_a1111_layout(tmp_path):
    c = cfg("--data-dir", str(tmp_path))
    created = ensure_data_dirs(c)
    expected = [
        "models/Stable-diffusion", "models/VAE", "models/Lora", "models/ESRGAN", "models/ControlNet",
        "embeddings", "outputs", "extensions",
    ]
    for rel in expected:
        assert (tmp_path / rel).is_dir(), rel
    assert set(created) == {str(tmp_path / rel) for rel in expected}
    (tmp_path / "models" / "Lora" / "keep.safetensors").write_bytes(b"x")
    ensure_data_dirs(c)  # idempotent, keeps contents
    assert (tmp_path / "models" / "Lora" / "keep.safetensors").read_bytes() == b"x"


def test_ensure_data_dirs_honours_models_dir(tmp_path):
    c = cfg("--data-dir", str(tmp_path / "data"), "--models-dir", str(tmp_path / "models2"))
    ensure_data_dirs(c)
    assert (tmp_path / "models2" / "Stable-diffusion").is_dir()
    assert (tmp_path / "models2" / "ControlNet").is_dir()
    assert not (tmp_path / "data" / "models").exists()
    assert (tmp_path / "data" / "outputs").is_dir()
