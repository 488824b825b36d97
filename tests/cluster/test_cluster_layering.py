"""The cluster is optional: nothing outside webui/cluster imports ray, and the single-machine app never loads it.
It stands beside api/ and ui/ (house rule 8): it imports the app's composition root and core, never those adapters."""

import subprocess
import sys

from tests.test_layering import ROOT, _adapter_imports, _imported_modules


def test_only_the_cluster_package_imports_ray():
    sources = [p for p in sorted((ROOT / "webui").rglob("*.py")) if "cluster" not in p.relative_to(ROOT).parts]
    sources += [ROOT / "launch.py", *sorted((ROOT / "pipelines").rglob("*.py"))]
    assert len(sources) > 50
    bad = {str(p.relative_to(ROOT)): sorted(m for m in _imported_modules(p) if m == "ray" or m.startswith("ray."))
           for p in sources}
    assert {k: v for k, v in bad.items() if v} == {}
    assert any(m.startswith("ray") for p in (ROOT / "webui" / "cluster").rglob("*.py") for m in _imported_modules(p))


def test_cluster_does_not_import_the_api_or_ui_adapters():
    assert _adapter_imports("cluster", "api") == {}
    assert _adapter_imports("cluster", "ui") == {}


def test_the_single_machine_app_runs_without_ray(data_dir):
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "import launch\n"
        "from webui.app import build_app\n"
        "from webui.config import parse\n"
        f"config = parse(['--nowebui', '--data-dir', {str(data_dir)!r}, '--skip-load-model-at-start'])\n"
        "with TestClient(build_app(config)) as c:\n"
        "    assert c.get('/sdapi/v1/sd-models').status_code == 200\n"
        "bad = [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]\n"
        "assert not bad, bad[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(ROOT), timeout=300)
