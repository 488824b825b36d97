"""House rule 1 and 2: webui.core never loads a UI/HTTP layer, and importing does no work."""

import subprocess
import sys


def test_core_imports_neither_gradio_nor_fastapi():
    code = (
        "import sys, webui.core.generation.engine, webui.core.models.loader, webui.core.generation.samplers, webui.core.generation.sampling_plan, "
        "webui.core.settings, webui.core.queue, pipelines.a1111\n"
        "bad = [m for m in ('gradio', 'fastapi', 'starlette', 'webui.api', 'webui.ui') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_does_no_work(tmp_path):
    # importing the launcher and the app with a bogus argv parses nothing and creates no folder
    code = "import sys; sys.argv = ['launch.py', '--no-such-flag']; import launch, webui.app, webui.config"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(tmp_path.parent.parent.parent) if False else None)
