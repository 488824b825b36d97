"""The single-process server's answers to a list of txt2img bodies, computed in a fresh process started with the
thread count of one cluster replica (on CPU, float sums depend on the thread count torch starts with).

Usage: OMP_NUM_THREADS=1 python -m tests.cluster.reference_server DATA_DIR < bodies.json > answers.json
"""

import json
import sys


def main() -> None:
    from fastapi.testclient import TestClient

    from webui.app import build_app
    from webui.config import parse

    bodies = json.load(sys.stdin)
    config = parse(["--nowebui", "--data-dir", sys.argv[1], "--skip-load-model-at-start"])
    with TestClient(build_app(config)) as client:
        answers = [client.post("/sdapi/v1/txt2img", json=body).json() for body in bodies]
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
