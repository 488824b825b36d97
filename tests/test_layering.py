"""House rule 1 and 2: webui.core never loads a UI/HTTP layer, and importing does no work."""

import subprocess
import sys


def test_core_imports_neither_gradio_nor_fastapi():
    # nor the plugins: the engine calls hooks through the manager it is given, it never imports one
    code = (
        "import sys, webui.core.generation.engine, webui.core.models.loader, webui.core.generation.samplers, "
        "webui.core.generation.sampling_plan, webui.core.settings, webui.core.queue, webui.core.options, "
        "webui.core.io.paste, pipelines.a1111\n"
        "bad = [m for m in ('gradio', 'fastapi', 'starlette', 'webui.api', 'webui.ui', 'webui.plugins') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_does_no_work(tmp_path):
    # importing the launcher and the app with a bogus argv parses nothing and creates no folder
    code = "import sys; sys.argv = ['launch.py', '--no-such-flag']; import launch, webui.app, webui.config"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(tmp_path.parent.parent.parent) if False else None)


def _imported_modules(path) -> set[str]:
    """Every module a Python file imports (absolute, relative ones resolved), at any depth (function bodies too)."""
    import ast

    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def _adapter_imports(adapter: str, other: str) -> dict[str, list[str]]:
    files = sorted((ROOT / "webui" / adapter).rglob("*.py"))
    assert len(files) >= 3, f"no sources found under webui/{adapter}"  # never pass vacuously
    bad = {}
    for path in files:
        hits = sorted(m for m in _imported_modules(path) if m == f"webui.{other}" or m.startswith(f"webui.{other}."))
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    return bad


def test_ui_and_api_adapters_do_not_import_each_other():
    # house rule 8: ui/ and api/ stand side by side on core; shared logic belongs in webui.core
    assert _adapter_imports("ui", "api") == {}
    assert _adapter_imports("api", "ui") == {}


def test_import_scanner_sees_imports(tmp_path):
    # the scanner finds plain, from-, relative and function-local imports (so the test above can fail)
    probe = ROOT / "webui" / "ui" / "_layering_probe.py"
    src = "import webui.api.models\ndef f():\n    from webui.api.handlers import options\nfrom ..api import errors\n"
    probe.write_text(src, encoding="utf-8")
    try:
        assert _imported_modules(probe) >= {"webui.api.models", "webui.api.handlers", "webui.api.errors"}
        assert "webui/ui/_layering_probe.py" in _adapter_imports("ui", "api")
    finally:
        probe.unlink()
