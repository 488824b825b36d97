"""The cluster (issue 18) on this machine's CPUs: one local Ray cluster with 2 replicas for the whole module (its
start-up is the cost), the tiny checkpoints, requests through the ingress app in-process (TestClient)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import ray
from fastapi.testclient import TestClient
from ray import serve

from webui.cluster.ingress import build_cluster_app
from webui.cluster.options import NAMESPACE, ClusterOptions
from webui.config import parse

SD1, SD2 = "tiny-sd15", "tiny-sd2-v"
BODY = {"prompt": "a cat", "steps": 3, "width": 64, "height": 64, "sampler_name": "Euler a"}
OPTIONS = ClusterOptions(replicas=2, models_per_replica=2, max_ongoing_requests=4, max_queued_requests=8)


def _data_dir(models_root, tmp_path_factory, name):
    root, _ = models_root
    d = tmp_path_factory.mktemp(name)
    (d / "models").mkdir()
    os.symlink(root / "models" / "Stable-diffusion", d / "models" / "Stable-diffusion")
    return d


@pytest.fixture(scope="module")
def cluster(models_root, tmp_path_factory):
    ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False)
    try:
        data = _data_dir(models_root, tmp_path_factory, "cluster-data")
        app = build_cluster_app(parse(["--nowebui", "--data-dir", str(data)]), OPTIONS)
        with TestClient(app) as client:
            client.data_dir = data
            yield client
        app.state.cluster.shutdown()
    finally:
        serve.shutdown()
        ray.shutdown()


def _single_process(models_root, tmp_path_factory, bodies):
    """The single-process server's answers (tests/cluster/reference_server.py), started with one replica's thread
    count: a replica with 1 CPU runs torch on 1 thread, and CPU float sums depend on it."""
    data = _data_dir(models_root, tmp_path_factory, "single-data")
    env = {**os.environ, "OMP_NUM_THREADS": str(int(OPTIONS.cpus_per_replica))}
    done = subprocess.run([sys.executable, "-m", "tests.cluster.reference_server", str(data)], env=env,
                          input=json.dumps(bodies), capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _body(checkpoint, seed, **extra):
    return {**BODY, "seed": seed, "override_settings": {"sd_model_checkpoint": checkpoint}, **extra}


def _txt2img(client, checkpoint, seed, **extra):
    return client.post("/sdapi/v1/txt2img", json=_body(checkpoint, seed, **extra))


def _replicas(client):
    return client.get("/sdapi/v1/cluster").json()["replicas"]


def test_mixed_checkpoints_routed_by_model_same_images_no_reload_storm(cluster, models_root, tmp_path_factory):
    # one request per checkpoint first: each lands on a replica without a model (Serve: fewest models loaded)
    for ckpt in (SD1, SD2):
        assert _txt2img(cluster, ckpt, 1).status_code == 200
    jobs = [(SD1 if i % 2 else SD2, 100 + i) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda job: _txt2img(cluster, *job), jobs))
    assert [a.status_code for a in answers] == [200] * 8
    references = _single_process(models_root, tmp_path_factory, [_body(*job) for job in jobs])
    for (ckpt, seed), answer, reference in zip(jobs, answers, references):
        assert answer.json()["images"] == reference["images"], (ckpt, seed)
        assert json.loads(answer.json()["info"])["seed"] == seed
        assert answer.json()["parameters"] == reference["parameters"]
        assert answer.headers["X-Task-Id"].startswith("task(txt2img-")
    replicas = _replicas(cluster)
    assert len(replicas) == 2 and all(r["device"].startswith("cpu") for r in replicas)
    # 10 requests, 2 checkpoints: every checkpoint was loaded once, each on its own replica -- no reload per call
    loads = [r["loads"] for r in replicas]
    assert all(count == 1 for per_replica in loads for count in per_replica.values()), loads
    assert sorted(len(per_replica) for per_replica in loads) == [1, 1], loads
    assert {t.split(" [")[0] for r in replicas for t in r["loaded_models"]} == {f"{SD1}.safetensors",
                                                                                  f"sd2/{SD2}.safetensors"}


def test_progress_and_interrupt_reach_the_replica_running_the_task(cluster):
    task = "task(cluster-long)"
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=_txt2img(cluster, SD1, 5, steps=400,
                                                                       force_task_id=task)))
    thread.start()
    deadline = time.monotonic() + 60
    status = {}
    while time.monotonic() < deadline:
        status = cluster.get("/sdapi/v1/progress", params={"id_task": task}).json()
        if status["status"] == "running" and status["state"]["sampling_step"] > 0:
            break
        time.sleep(0.1)
    assert status["status"] == "running" and status["id_task"] == task, status
    overall = cluster.get("/sdapi/v1/progress").json()
    assert overall["cluster"]["replicas"] == 2 and overall["cluster"]["running"] >= 1
    assert overall["state"]["sampling_steps"] == 400
    assert [r["running"] for r in _replicas(cluster)].count(task) == 1
    assert cluster.post("/sdapi/v1/interrupt", params={"id_task": task}).json() == {}
    thread.join(60)
    answer = result["r"]
    assert answer.status_code == 200 and answer.headers["X-Task-Id"] == task
    assert answer.json()["parameters"]["force_task_id"] == task
    done = cluster.get("/sdapi/v1/progress", params={"id_task": task}).json()
    assert done["status"] == "interrupted", done
    assert done["state"]["sampling_step"] < 399  # stopped early, not run to the end
    unknown = cluster.post("/sdapi/v1/interrupt", params={"id_task": "task(nobody)"})
    assert unknown.status_code == 404 and set(unknown.json()) == {"error", "detail", "body", "errors"}


def test_a_task_waiting_for_a_replica_is_queued_and_can_be_cancelled(cluster):
    # 2 replicas x 4 ongoing = 8 held by replicas; the 9th and 10th wait at the ingress
    ids = [f"task(wait-{i})" for i in range(10)]
    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(_txt2img, cluster, SD1, 50 + i, steps=200, force_task_id=t) for i, t in enumerate(ids)]
        waiting = []
        deadline = time.monotonic() + 60
        while not waiting and time.monotonic() < deadline:
            waiting = cluster.get("/sdapi/v1/cluster").json()["waiting"]
            time.sleep(0.05)
        assert waiting, "no request waited at the ingress"
        victim = waiting[-1]
        status = cluster.get("/sdapi/v1/progress", params={"id_task": victim}).json()
        assert status["status"] == "queued" and status["queue_position"] >= 1, status
        assert cluster.post("/sdapi/v1/interrupt", params={"id_task": victim}).json() == {}
        cancelled = futures[ids.index(victim)].result(60)
        assert cancelled.status_code == 409 and cancelled.headers["X-Task-Id"] == victim
        assert set(cancelled.json()) == {"error", "detail", "body", "errors"}
        for t in ids:  # the rest: interrupted where running, cancelled where queued on a replica
            if t != victim:
                cluster.post("/sdapi/v1/interrupt", params={"id_task": t})
        codes = [f.result(120).status_code for f in futures]
    assert set(codes) <= {200, 409}, codes  # interrupted (200 with what it made) or cancelled before it ran


def test_options_go_to_every_replica_and_are_saved_once(cluster):
    before = cluster.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
    try:
        assert cluster.post("/sdapi/v1/options", json={"sd_model_checkpoint": SD2}).status_code == 200
        stored = json.loads((cluster.data_dir / "config.json").read_text())
        assert stored["sd_model_checkpoint"].startswith(f"sd2/{SD2}.safetensors [")
        assert cluster.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == stored["sd_model_checkpoint"]
        # a request without override uses the new global checkpoint, whichever replica runs it
        for seed in (1, 2):
            info = json.loads(cluster.post("/sdapi/v1/txt2img", json={**BODY, "seed": seed}).json()["info"])
            assert info["sd_model_name"] == SD2
        bad = cluster.post("/sdapi/v1/options", json={"sd_model_checkpoint": "no-such-model"})
        assert bad.status_code == 404 and set(bad.json()) == {"error", "detail", "body", "errors"}
    finally:
        cluster.post("/sdapi/v1/options", json={"sd_model_checkpoint": before or SD1})


def test_control_routes_reach_every_replica_and_lists_come_from_the_registry(cluster):
    saved = [_txt2img(cluster, ckpt, 77, save_images=True) for ckpt in (SD1, SD2)]
    assert [r.status_code for r in saved] == [200, 200]
    # which replica takes which checkpoint is Serve's choice (a replica may hold both): only known replicas answer
    assert {r.headers["X-Replica-Id"] for r in saved} <= {r["id"] for r in _replicas(cluster)}
    files = sorted(p.name for p in (cluster.data_dir / "outputs").rglob("*.png"))
    assert len(files) == 2 and all("-77" in name for name in files), files  # one shared folder
    answer = _txt2img(cluster, SD2, 4)
    assert answer.headers["X-Replica-Id"] in {r["id"] for r in _replicas(cluster)}
    assert float(answer.headers["X-Replica-Process-Time"]) > 0
    titles = [m["title"] for m in cluster.get("/sdapi/v1/sd-models").json()]
    assert any(t.startswith(f"{SD1}.safetensors") for t in titles) and len(titles) == 3
    bad = cluster.post("/sdapi/v1/txt2img", json={**BODY, "steps": "many"})  # the replica's app validates it
    assert bad.status_code == 422 and set(bad.json()) == {"error", "detail", "body", "errors"}
    assert cluster.post("/sdapi/v1/skip").json() is None
    assert cluster.post("/sdapi/v1/unload-checkpoint").json() == {}
    assert all(r["loaded_models"] == [] for r in _replicas(cluster))
    idle = cluster.get("/sdapi/v1/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0
    assert idle["cluster"] == {"replicas": 2, "running": 0, "queued": 0}
    assert _txt2img(cluster, SD2, 4).json()["images"] == answer.json()["images"]  # loaded again where routed


def test_interrogate_and_create_embedding_run_on_a_replica(cluster):
    """Work that loads a model goes to a replica: the ingress never loads one (nor an interrogator)."""
    import base64
    import io

    from PIL import Image

    from tests.fixtures.deepbooru import write_deepbooru_model

    write_deepbooru_model(str(cluster.data_dir), ["tree", "rating:safe"], scores=[0.8, 0.9])
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, "PNG")
    r = cluster.post("/sdapi/v1/interrogate", json={"image": base64.b64encode(buf.getvalue()).decode(),
                                                    "model": "deepdanbooru"})
    assert r.status_code == 200 and r.json() == {"caption": "tree"}, r.text
    assert r.headers["X-Replica-Id"] in {x["id"] for x in _replicas(cluster)}
    r = cluster.post("/sdapi/v1/create/embedding", json={"name": "cluster-emb", "num_vectors_per_token": 2,
                                                              "overwrite_old": False, "init_text": "*"})
    assert r.status_code == 200 and "cluster-emb" in r.json()["info"], r.text
    assert (cluster.data_dir / "embeddings" / "cluster-emb.pt").is_file()
    ingress = cluster.app.state.webui
    assert ingress.engine.current_model() is None and ingress.interrogators._deepbooru is None


def test_back_pressure_answers_503_with_retry_after(cluster):
    # 2 replicas x 4 ongoing + 8 waiting at the ingress = 16 requests at once; beyond that, refused at once
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda i: _txt2img(cluster, SD1, 300 + i, steps=40), range(24)))
    codes = [a.status_code for a in answers]
    refused = [a for a in answers if a.status_code == 503]
    assert set(codes) == {200, 503} and codes.count(200) >= 8, codes
    assert all(a.headers["Retry-After"] == str(OPTIONS.retry_after_s) for a in refused)
    assert set(refused[0].json()) == {"error", "detail", "body", "errors"}


def test_a_killed_replica_is_retried_elsewhere_and_restarted(cluster):
    task = "task(cluster-victim)"
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=_txt2img(cluster, SD1, 9, steps=150,
                                                                       force_task_id=task)))
    thread.start()
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        victim = next((r for r in _replicas(cluster) if r["running"] == task), None)
        time.sleep(0.05)
    assert victim is not None
    os.kill(victim["pid"], signal.SIGKILL)
    thread.join(120)
    answer = result["r"]
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Task-Id"] == task
    assert answer.headers["X-Replica-Id"] != victim["id"]  # the retry ran on the other replica
    assert len(answer.json()["images"]) == 1
    # the other replica answered it; Ray starts a new replica in place of the dead one
    deadline = time.monotonic() + 90
    replicas = []
    while time.monotonic() < deadline:
        replicas = _replicas(cluster)
        if len(replicas) == 2 and victim["pid"] not in [r["pid"] for r in replicas]:
            break
        time.sleep(0.5)
    assert len(replicas) == 2 and victim["pid"] not in [r["pid"] for r in replicas], replicas
    assert _txt2img(cluster, SD2, 3).status_code == 200
