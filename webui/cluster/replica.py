"""One replica: its own AppState (one device, one model cache, one job queue) and its own copy of the FastAPI app,
run in-process. A routed request is answered by the same handlers as on the single-process server; the replica only
(1) makes sure the checkpoint Serve routed it for is loaded (Serve model multiplexing), (2) tells the coordinator
which task it holds, and (3) answers control calls (progress, interrupt, skip, options) from the coordinator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import tempfile
import threading
import time
from collections import Counter
from typing import Any

from webui.cluster.forward import Answer, AsgiCaller, Forwarded
from webui.cluster.options import ClusterOptions
from webui.config import Config
from webui.plugins.hooks import hookimpl

log = logging.getLogger(__name__)


class _LoadCounter:
    """Counts fresh checkpoint loads (the on_model_loaded hook) by title: the evidence that routing keeps models
    where they are (no reload storm)."""

    def __init__(self, counts: Counter) -> None:
        self.counts = counts

    @hookimpl
    def on_model_loaded(self, sd_model):
        self.counts[sd_model.info.title] += 1


def _dumps(obj: Any) -> bytes:
    """JSON as FastAPI's JSONResponse renders it, so a re-encoded answer has the single-process server's bytes."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


class ReplicaServer:
    """The state of one replica process. Built by the Serve deployment's constructor."""

    def __init__(self, config: Config, options: ClusterOptions, coordinator: Any, replica_id: str) -> None:
        import ray

        from webui.app import build_app
        from webui.state import build_state

        self.options = options
        self.coordinator = coordinator
        self.replica_id = replica_id
        self.node = ray.util.get_node_ip_address()
        stored = ray.get(coordinator.register.remote(replica_id, {"replica": replica_id, "starting": True}))
        # The ingress persists the options (once, in the shared config.json); a replica keeps a private copy it may
        # write, seeded from the coordinator's current options (a restarted replica starts from the latest).
        self._settings_dir = tempfile.mkdtemp(prefix="webui-replica-")
        settings_file = os.path.join(self._settings_dir, "config.json")
        with open(settings_file, "w", encoding="utf-8") as f:
            json.dump(stored, f)
        # One device per replica: with num_gpus=1 Ray sets CUDA_VISIBLE_DEVICES, so the replica's device is cuda:0.
        # The ingress has checked the client: no --api-auth here; nothing outside Ray can reach a replica.
        config = dataclasses.replace(config, ui_settings_file=settings_file, device_id=None, nowebui=True, api=True,
                                     api_auth=None, api_server_stop=False, skip_load_model_at_start=True,
                                     subpath=None)  # the ingress strips --subpath before forwarding
        self.state = build_state(config, create_demo=False)
        self.loads: Counter = Counter()
        self.state.plugins.register(_LoadCounter(self.loads), "cluster-load-counter")
        self._pin_limits()
        self.app = build_app(config, self.state)
        self.call = AsgiCaller(self.app)
        self.state.queue.start()
        self.requests = 0
        self._stop = threading.Event()
        self._control = threading.Thread(target=self._control_thread, name="cluster-control", daemon=True)
        self._control.start()
        log.info("replica %s ready on %s (%s)", replica_id, self.node, self.state.plan.description)

    def _pin_limits(self) -> None:
        """The model cache holds as many checkpoints as Serve's multiplexing counts per replica."""
        self.state.settings.set("sd_checkpoints_limit", self.options.models_per_replica)

    # -- requests routed by Serve ------------------------------------------------------------------------------------

    async def load_checkpoint(self, model_id: str) -> str:
        """Serve's multiplexed loader: load ``model_id`` (a checkpoint title) into this replica's model cache, on
        its worker as every model load. A name that does not resolve or fails to load is left to the request
        itself, which answers it exactly as the single-process server does."""
        info = self.state.registry.resolve(model_id)
        if info is not None:
            future = self.state.queue.submit("load-model", lambda p: self.state.engine.load(info))
            try:
                await asyncio.wrap_future(future)
            except Exception as e:  # reported by the request that needs it
                log.warning("replica %s: %s could not be loaded: %s", self.replica_id, model_id, e)
        return model_id

    async def run(self, req: Forwarded, task_id: str | None) -> Answer:
        """Answer ``req`` with this replica's app. ``task_id``: the id the ingress gave the job (the client's
        ``force_task_id`` or a new one), put in the body so progress and interrupt by id find it here."""
        self.requests += 1
        try:
            restore = None
            if task_id is not None:
                self.coordinator.claim.remote(self.replica_id, task_id)
                req, restore = _with_task_id(req, task_id)
            answer = await self.call(req)
            if restore is not None and answer.status == 200:
                answer = _restore_echo(answer, restore)
            extra = {"replica": self.replica_id, "process_time": answer.header("x-process-time") or ""}
            return Answer(answer.status, answer.headers, answer.body, extra)
        finally:
            self.requests -= 1

    # -- control calls from the coordinator --------------------------------------------------------------------------

    def status(self) -> dict:
        queue = self.state.queue
        tracker = queue.progress
        return {
            "replica": self.replica_id,
            "node": self.node,
            "pid": os.getpid(),
            "device": self.state.plan.description,
            "loaded_models": [c.info.title for c in self.state.engine.models.loaded()],
            "loads": dict(self.loads),
            "running": queue.current_task,
            "job": tracker.job,
            "started": tracker.time_start if queue.current_task else None,
            "queued": queue.pending_tasks(),
            "requests": self.requests,
        }

    async def control(self, kind: str, payload: Any) -> Any:
        if kind == "http":
            return await self.call(payload)
        if kind == "options":
            # checked by the ingress (the same core checks); applied here without loading: the checkpoint loads on
            # the replica that gets the next request for it (multiplexing), not on every replica at once
            for key, value in payload.items():
                self.state.settings.set(key, value)
            self._pin_limits()
            return Answer(200, body=b"null")
        if kind == "status":
            return self.status()
        raise ValueError(f"unknown control call {kind!r}")

    def _control_thread(self) -> None:
        asyncio.run(self._control_loop())

    async def _control_loop(self) -> None:
        """Long-poll the coordinator: report status, take calls, answer each as soon as it is done (a slow call,
        e.g. unload-checkpoint waiting for the queue, does not hold back a progress poll)."""
        tasks: set[asyncio.Task] = set()
        while not self._stop.is_set():
            try:
                calls = await self.coordinator.poll.remote(self.replica_id, self.status())
            except Exception as e:  # the coordinator is restarting or the driver is going away: try again
                log.warning("replica %s: control poll failed: %s", self.replica_id, e)
                await asyncio.sleep(1.0)
                self._find_coordinator()
                continue
            for call_id, kind, payload in calls:
                task = asyncio.ensure_future(self._answer(call_id, kind, payload))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    async def _answer(self, call_id: int, kind: str, payload: Any) -> None:
        try:
            result = await self.control(kind, payload)
        except Exception as e:
            log.exception("replica %s: control call %s failed", self.replica_id, kind)
            result = Answer(500, (("content-type", "application/json"),), _dumps(
                {"error": type(e).__name__, "detail": str(e), "body": "", "errors": str(e)}))
        await self.coordinator.answer.remote(call_id, result)

    def _find_coordinator(self) -> None:
        """A new ingress started a new coordinator under the same name: talk to that one."""
        import ray

        from webui.cluster.options import COORDINATOR, NAMESPACE

        try:
            self.coordinator = ray.get_actor(COORDINATOR, namespace=NAMESPACE)
        except ValueError:
            pass  # not there (yet)

    def close(self) -> None:
        self._stop.set()
        try:
            self.coordinator.leave.remote(self.replica_id)
        except Exception:
            pass
        self.state.queue.stop(timeout=5)


def _with_task_id(req: Forwarded, task_id: str) -> tuple[Forwarded, Any]:
    """The request with ``force_task_id`` set (when the client set none) and what to echo back instead."""
    try:
        body = json.loads(req.body)
    except ValueError:
        return req, None  # not JSON: the app answers it (422) as the single-process server does
    if not isinstance(body, dict) or body.get("force_task_id"):
        return req, None
    original = body.get("force_task_id")
    body["force_task_id"] = task_id
    return dataclasses.replace(req, body=json.dumps(body).encode("utf-8")), (original,)


def _restore_echo(answer: Answer, restore: tuple) -> Answer:
    """The echoed ``parameters.force_task_id`` as the client sent it (the single-process server's answer)."""
    try:
        data = json.loads(answer.body)
    except ValueError:
        return answer
    if isinstance(data, dict) and isinstance(data.get("parameters"), dict):
        data["parameters"]["force_task_id"] = restore[0]
    return Answer(answer.status, answer.headers, _dumps(data), answer.extra)


def replica_deployment(config: Config, options: ClusterOptions, coordinator_name: str, namespace: str,
                       actor_options: dict):
    """The Serve deployment (not yet bound): ``options.replicas`` replicas, each a :class:`ReplicaServer`, routed by
    checkpoint (model multiplexing, ``options.models_per_replica`` per replica), with Serve's bounds
    ``max_ongoing_requests`` per replica and ``max_queued_requests`` at the caller."""
    import ray
    from ray import serve

    from webui.cluster.options import DEPLOYMENT

    @serve.deployment(name=DEPLOYMENT, num_replicas=options.replicas,
                      max_ongoing_requests=options.max_ongoing_requests,
                      max_queued_requests=options.max_queued_requests,
                      ray_actor_options=actor_options, graceful_shutdown_timeout_s=5,
                      health_check_period_s=2, health_check_timeout_s=30)
    class SDReplica:
        def __init__(self) -> None:
            replica_id = serve.get_replica_context().replica_id.unique_id
            coordinator = ray.get_actor(coordinator_name, namespace=namespace)
            self.server = ReplicaServer(config, options, coordinator, replica_id)

        @serve.multiplexed(max_num_models_per_replica=options.models_per_replica)
        async def get_model(self, model_id: str) -> str:
            return await self.server.load_checkpoint(model_id)

        async def handle(self, req: Forwarded, task_id: str | None = None) -> Answer:
            model_id = serve.get_multiplexed_model_id()
            if model_id:
                await self.get_model(model_id)
            return await self.server.run(req, task_id)

        def pid(self) -> int:
            return os.getpid()

        def __del__(self) -> None:
            server = getattr(self, "server", None)
            if server is not None:
                server.close()

    return SDReplica


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds (start-up and restart waits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
