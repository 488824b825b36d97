"""The ingress: the same FastAPI app as the single-process server (``webui.app.build_app`` over an AppState of the
same folders and settings), with the routes that need a device or a replica's state answered through the cluster.

Everything else -- sd-models, samplers, loras, options GET, png-info, cmd-flags, ... -- is the ingress's own app
answering from the shared registry and config.json, exactly as on one machine. The ingress never loads a model.

The cluster routes are one table (``CLUSTER_ROUTES``), added through the on_app_started hook behind the same
--api-auth as every route, in place of the app's routes of the same path and method.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from webui.cluster.forward import Answer, Forwarded, keep_headers
from webui.cluster.options import APP_NAME, COORDINATOR, NAMESPACE, ClusterOptions
from webui.config import Config
from webui.core.options import changed_options, store_options
from webui.core.queue import DuplicateTaskId, TaskCancelled, idle_state_dict, new_task_id
from webui.plugins.hooks import hookimpl

log = logging.getLogger(__name__)

#: Our response header with a job's task id (the single-process server sets it too).
TASK_ID_HEADER = "X-Task-Id"


def a1111_error(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    """A1111's error body (error, detail, body, errors). Written out here: cluster/ stands beside api/ and does not
    import it (house rule 8); the body is four keys."""
    return JSONResponse({"error": "HTTPException", "detail": detail, "body": "", "errors": detail}, status_code=status,
                        headers=headers)


#: Ours, on answers a replica made: which replica, and the seconds its app took (X-Process-Time is the ingress's).
REPLICA_HEADER = "X-Replica-Id"
REPLICA_TIME_HEADER = "X-Replica-Process-Time"


def _response(answer: Answer) -> Response:
    headers = dict(keep_headers(answer.headers))
    if "replica" in answer.extra:
        headers[REPLICA_HEADER] = answer.extra["replica"]
    if "process_time" in answer.extra:
        headers[REPLICA_TIME_HEADER] = answer.extra["process_time"]
    return Response(answer.body, answer.status, headers=headers)


async def _forwarded(request: Request, path: str) -> Forwarded:
    return Forwarded(request.method, path, tuple(request.query_params.multi_items()),
                     keep_headers(request.headers.items()), await request.body())


class ClusterError(Exception):
    pass


class Cluster:
    """The ingress's view of the cluster: the Serve handle of the replicas, the coordinator, and the tasks sent and
    not answered yet (by arrival)."""

    def __init__(self, handle, coordinator, options: ClusterOptions, state) -> None:
        self.handle = handle
        self.coordinator = coordinator
        self.options = options
        self.state = state
        self.inflight: OrderedDict[str, Any] = OrderedDict()  # task id -> its DeploymentResponse (or None)
        self.cancelled: set[str] = set()

    # -- starting and stopping ---------------------------------------------------------------------------------------

    @classmethod
    def start(cls, config: Config, options: ClusterOptions, state) -> "Cluster":
        """Join (or start) the Ray cluster, start the coordinator and the replicas; returns once the replicas
        answer. ``state``: the ingress's AppState (its stored options seed the replicas)."""
        import ray
        from ray import serve

        from webui.cluster.coordinator import Coordinator
        from webui.cluster.replica import replica_deployment

        if not ray.is_initialized():
            ray.init(address=options.address, namespace=NAMESPACE, include_dashboard=False)
        coordinator = ray.remote(Coordinator).options(
            name=COORDINATOR, namespace=NAMESPACE, num_cpus=0, max_concurrency=1000, get_if_exists=False,
        ).remote(state.settings.all())
        gpus = options.gpus_per_replica
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        serve.start(proxy_location="Disabled")  # the ingress is our uvicorn; Serve's HTTP proxy is not used
        deployment = replica_deployment(config, options, COORDINATOR, NAMESPACE,
                                        {"num_cpus": options.cpus_per_replica, "num_gpus": gpus})
        handle = serve.run(deployment.bind(), name=APP_NAME, route_prefix=None)
        cluster = cls(handle, coordinator, options, state)
        deadline = time.monotonic() + 120
        while len(ray.get(coordinator.live.remote())) < options.replicas and time.monotonic() < deadline:
            time.sleep(0.2)
        return cluster

    def shutdown(self) -> None:
        import ray
        from ray import serve

        try:
            serve.delete(APP_NAME)
        finally:
            ray.kill(self.coordinator)

    # -- routing -----------------------------------------------------------------------------------------------------

    def model_for(self, body: Any) -> str:
        """The Serve multiplexed model id of a generation request: the checkpoint it needs -- its
        ``override_settings.sd_model_checkpoint``, else the stored option -- as its name relative to the checkpoint
        folder (stable, unlike the title, which gains a hash once one is computed). "" when none resolves."""
        models = self.state.engine.models
        override = body.get("override_settings") if isinstance(body, dict) else None
        name = override.get("sd_model_checkpoint") if isinstance(override, dict) else None
        for candidate in ((name,) if isinstance(name, str) and name else ()) + (None,):
            try:
                return models.resolve(candidate).name
            except Exception:  # an unknown name: the job falls back to the stored checkpoint, and so does routing
                continue
        return ""

    async def dispatch(self, req: Forwarded, task_id: str | None, model_id: str = "") -> Answer:
        """Send ``req`` to a replica (the one holding ``model_id`` when Serve can), retried once on another when the
        replica dies with it. Raises TaskCancelled (interrupted while waiting for a replica), or ClusterError
        (status, message) for a 503."""
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RequestCancelledError

        for attempt in (1, 2):
            handle = self.handle.options(multiplexed_model_id=model_id) if model_id else self.handle
            response = handle.handle.remote(req, task_id)
            if task_id is not None:
                self.inflight[task_id] = response
            try:
                return await response
            except BackPressureError:
                raise ClusterError("every replica is busy and the queue is full; retry later") from None
            except RequestCancelledError:
                raise TaskCancelled(task_id or "") from None
            except (RayActorError, DeploymentUnavailableError) as e:
                if task_id is not None and task_id in self.cancelled:
                    raise TaskCancelled(task_id) from None
                if attempt == 2:
                    raise ClusterError(f"the replica running this request stopped ({type(e).__name__}), and so did "
                                       "the one it was retried on; retry later") from None
                log.warning("replica lost with %s (%s); retrying once on another", task_id or req.path, e)
                if task_id is not None:
                    # the dead replica's claim is stale: progress must not ask it about the retried task
                    await self.coordinator.forget.remote(task_id)
        raise AssertionError("unreachable")

    async def call_all(self, kind: str, payload: Any) -> dict[str, Any]:
        return await self.coordinator.broadcast.remote(kind, payload)

    async def unclaimed(self) -> list[str]:
        """Tasks sent and not yet taken by a replica (waiting in the handle's queue), oldest first."""
        ids = list(self.inflight)
        owners = await self.coordinator.owners_of.remote(ids) if ids else {}
        return [t for t in ids if owners.get(t) is None]


# --------------------------------------------------------------------------------------------------------------------
# handlers
# --------------------------------------------------------------------------------------------------------------------


def _task_body(task_id: str, status: str, textinfo: str, position: int | None, size: int) -> dict:
    """GET /progress?id_task= for a task no replica holds: the TaskProgressResponse fields (ProgressResponse +
    id_task, status, queue_position, queue_size) with A1111's idle state."""
    return {"progress": 0.0, "eta_relative": 0.0, "state": idle_state_dict(), "current_image": None,
            "textinfo": textinfo, "id_task": task_id, "status": status, "queue_position": position,
            "queue_size": size}


def _handlers(cluster: Cluster) -> dict[str, Callable]:
    state = cluster.state

    async def generate(request: Request) -> Response:
        """txt2img / img2img: routed by the checkpoint they need; the replica's app answers."""
        path = request.url.path[len(request.scope.get("root_path", "")):] or request.url.path
        mode = "img2img" if path.endswith("img2img") else "txt2img"
        req = await _forwarded(request, path)
        try:
            body = json.loads(req.body) if req.body else None
        except ValueError:
            body = None
        forced = body.get("force_task_id") if isinstance(body, dict) else None
        task_id = forced if isinstance(forced, str) and forced else new_task_id(mode)
        if task_id in cluster.inflight:
            raise DuplicateTaskId(task_id)
        cluster.inflight[task_id] = None
        try:
            answer = await cluster.dispatch(req, task_id, cluster.model_for(body))
        except ClusterError as e:
            return a1111_error(503, str(e), {"Retry-After": str(cluster.options.retry_after_s)})
        except TaskCancelled as e:
            e.headers = {TASK_ID_HEADER: task_id}
            raise
        finally:
            cluster.inflight.pop(task_id, None)
            cluster.cancelled.discard(task_id)
        return _response(answer)

    async def to_any(request: Request) -> Response:
        """Device work with no checkpoint to route by (extras, the embeddings of the selected model): any replica,
        the one holding the selected checkpoint when Serve can."""
        req = await _forwarded(request, request.url.path)
        try:
            answer = await cluster.dispatch(req, None, cluster.model_for(None))
        except ClusterError as e:
            return a1111_error(503, str(e), {"Retry-After": str(cluster.options.retry_after_s)})
        return _response(answer)

    async def progress(request: Request) -> Response:
        """With id_task: the replica that holds the task answers (queued there, running, or its outcome); a task
        still waiting for a replica is "queued" here. Without: the oldest running job's progress (A1111's shape),
        plus ``cluster``: replicas, jobs running and jobs queued."""
        req = await _forwarded(request, "/sdapi/v1/progress")
        id_task = request.query_params.get("id_task")
        if id_task is not None:
            owner, answer = await cluster.coordinator.call_task.remote(id_task, "http", req)
            if answer is not None:
                return _response(answer)
            waiting = await cluster.unclaimed()
            if id_task in waiting:
                position = waiting.index(id_task) + 1
                return JSONResponse(_task_body(id_task, "queued", f"In queue: {position}/{len(waiting)}", position,
                                               len(waiting)))
            return JSONResponse(_task_body(id_task, "unknown", "Waiting...", None, len(waiting)))
        live = await cluster.coordinator.statuses.remote()
        running = sorted((s.get("started") or 0, rid) for rid, s in live.items() if s.get("running"))
        queued = sum(len(s.get("queued") or ()) for s in live.values()) + len(await cluster.unclaimed())
        body = None
        if running:
            answer = await cluster.coordinator.call.remote(running[0][1], "http", req)
            if answer is not None and answer.status == 200:
                body = json.loads(answer.body)
        if body is None:
            body = {"progress": 0.0, "eta_relative": 0.0, "state": idle_state_dict(), "current_image": None,
                    "textinfo": None}
        body["cluster"] = {"replicas": len(live), "running": len(running), "queued": queued}
        return JSONResponse(body)

    async def interrupt(request: Request) -> Response:
        """With id_task: the replica holding it interrupts (running) or cancels (queued) it; a task still waiting
        for a replica is cancelled here. Without: every replica's running job, as A1111 interrupts "the" job."""
        req = await _forwarded(request, "/sdapi/v1/interrupt")
        id_task = request.query_params.get("id_task")
        if id_task is None:
            await cluster.call_all("http", req)
            return JSONResponse({})
        owner, answer = await cluster.coordinator.call_task.remote(id_task, "http", req)
        if answer is not None:
            return _response(answer)
        response = cluster.inflight.get(id_task)
        if response is not None:
            cluster.cancelled.add(id_task)
            response.cancel()
            return JSONResponse({})
        return a1111_error(404, f"id_task: no queued, running or recent task {id_task!r}")

    async def broadcast(request: Request) -> Response:
        """skip, unload-checkpoint, reload-checkpoint: on every replica; the first failure (else the first answer)
        is the answer."""
        path = request.url.path[len(request.scope.get("root_path", "")):] or request.url.path
        answers = await cluster.call_all("http", await _forwarded(request, path))
        return _first_answer(answers)

    def refresher(local: Callable[[], None]):
        async def refresh(request: Request) -> Response:
            """refresh-*: the ingress's registry (what the list routes answer from), then every replica's."""
            path = request.url.path[len(request.scope.get("root_path", "")):] or request.url.path
            await asyncio.to_thread(local)
            return _first_answer(await cluster.call_all("http", await _forwarded(request, path)))
        return refresh

    def refresh_checkpoints() -> None:
        state.registry.refresh()
        state.engine.models.forget_failures()

    async def set_options(body: dict[str, Any], request: Request) -> Response:
        """POST /options: checked here (the same core checks as on one machine), applied on every replica (a new
        checkpoint is stored, and loaded by the replica that gets the next request for it), then saved once, in
        the shared config.json."""
        changes = changed_options(body, settings=state.settings, flags=state.config, registry=state.registry,
                                  vae_registry=state.vae_registry, for_request=False)
        ckpt = changes.get("sd_model_checkpoint")
        if ckpt is not None:
            info = state.engine.resolve_checkpoint(ckpt)
            changes["sd_model_checkpoint"] = (await asyncio.to_thread(state.registry.ensure_hash, info)).title
        if changes:
            answers = await cluster.call_all("options", changes)
            missing = [rid for rid, a in answers.items() if a is None]
            if missing:
                log.warning("options not confirmed by replicas %s (they start from the stored options when they "
                            "restart)", missing)
        store_options(state.settings, changes)
        await cluster.coordinator.set_options.remote(state.settings.all())
        return JSONResponse(None)

    async def cluster_info(request: Request) -> Response:
        """GET /sdapi/v1/cluster (ours): every live replica -- node, process, device, loaded checkpoints, loads so
        far, running task, queue -- and the requests waiting for a replica."""
        live = await cluster.coordinator.statuses.remote()
        replicas = [{
            "id": rid, "node": s.get("node"), "pid": s.get("pid"), "device": s.get("device"),
            "loaded_models": s.get("loaded_models", []), "loads": s.get("loads", {}),
            "running": s.get("running"), "job": s.get("job") or "", "queued": s.get("queued", []),
            "requests": s.get("requests", 0),
        } for rid, s in sorted(live.items())]
        o = cluster.options
        return JSONResponse({
            "replicas": replicas, "waiting": await cluster.unclaimed(),
            "configured_replicas": o.replicas, "models_per_replica": o.models_per_replica,
            "max_ongoing_requests": o.max_ongoing_requests, "max_queued_requests": o.max_queued_requests,
        })

    return {
        "generate": generate, "to_any": to_any, "progress": progress, "interrupt": interrupt,
        "broadcast": broadcast, "set_options": set_options, "cluster_info": cluster_info,
        "refresh_checkpoints": refresher(refresh_checkpoints),
        "refresh_vae": refresher(lambda: state.vae_registry.refresh()),
        "refresh_loras": refresher(lambda: state.loras.refresh()),
        "refresh_embeddings": refresher(lambda: None),
    }


def _first_answer(answers: dict[str, Answer | None]) -> Response:
    got = [a for a in answers.values() if a is not None]
    if not got:
        return a1111_error(503, "no replica answered; retry later")
    failed = next((a for a in got if a.status >= 400), None)
    return _response(failed or got[0])


@dataclass(frozen=True)
class ClusterRoute:
    path: str
    method: str
    handler: str  # a key of _handlers()


#: The routes the cluster answers in place of the app's own: device work and per-replica state. One table.
CLUSTER_ROUTES: tuple[ClusterRoute, ...] = (
    ClusterRoute("/sdapi/v1/txt2img", "POST", "generate"),
    ClusterRoute("/sdapi/v1/img2img", "POST", "generate"),
    ClusterRoute("/sdapi/v1/extra-single-image", "POST", "to_any"),
    ClusterRoute("/sdapi/v1/extra-batch-images", "POST", "to_any"),
    ClusterRoute("/sdapi/v1/interrogate", "POST", "to_any"),
    # creating and training embeddings / hypernetworks run the model too: a replica does it and writes the files to
    # the shared data folder (progress without id_task and interrupt already reach the replica's job)
    ClusterRoute("/sdapi/v1/create/embedding", "POST", "to_any"),
    ClusterRoute("/sdapi/v1/create/hypernetwork", "POST", "to_any"),
    ClusterRoute("/sdapi/v1/train/embedding", "POST", "to_any"),
    ClusterRoute("/sdapi/v1/train/hypernetwork", "POST", "to_any"),
    ClusterRoute("/sdapi/v1/embeddings", "GET", "to_any"),
    ClusterRoute("/sdapi/v1/progress", "GET", "progress"),
    ClusterRoute("/sdapi/v1/interrupt", "POST", "interrupt"),
    ClusterRoute("/sdapi/v1/skip", "POST", "broadcast"),
    ClusterRoute("/sdapi/v1/unload-checkpoint", "POST", "broadcast"),
    ClusterRoute("/sdapi/v1/reload-checkpoint", "POST", "broadcast"),
    ClusterRoute("/sdapi/v1/options", "POST", "set_options"),
    ClusterRoute("/sdapi/v1/refresh-checkpoints", "POST", "refresh_checkpoints"),
    ClusterRoute("/sdapi/v1/refresh-vae", "POST", "refresh_vae"),
    ClusterRoute("/sdapi/v1/refresh-loras", "POST", "refresh_loras"),
    ClusterRoute("/sdapi/v1/refresh-embeddings", "POST", "refresh_embeddings"),
    ClusterRoute("/sdapi/v1/cluster", "GET", "cluster_info"),
)


class ClusterRoutesPlugin:
    """Adds CLUSTER_ROUTES when the app starts (on_app_started: behind --api-auth like every route) and drops the
    app's own routes they stand for."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    @hookimpl
    def on_app_started(self, app: FastAPI, add_api_route):
        handlers = _handlers(self.cluster)
        before = set(map(id, app.router.routes))
        for r in CLUSTER_ROUTES:
            add_api_route(r.path, r.method, handlers[r.handler], None)
        replaced = {(r.path, r.method) for r in CLUSTER_ROUTES}
        app.router.routes[:] = [
            route for route in app.router.routes
            if id(route) not in before
            or not any((getattr(route, "path", None), m) in replaced for m in getattr(route, "methods", ()) or ())
        ]


def ingress_config(config: Config) -> Config:
    """The ingress serves the API only: the Gradio tabs run jobs on the local queue, which has no device here."""
    return dataclasses.replace(config, nowebui=True, api=True, skip_load_model_at_start=True)


def build_cluster_app(config: Config, options: ClusterOptions) -> FastAPI:
    """The ingress app over a fresh AppState, with the replicas started (joins or starts Ray)."""
    from webui.app import build_app
    from webui.state import build_state

    config = ingress_config(config)
    state = build_state(config)  # writes the demo model first when there is no checkpoint, before replicas scan
    cluster = Cluster.start(config, options, state)
    state.plugins.register(ClusterRoutesPlugin(cluster), "cluster")
    app = build_app(config, state)
    app.state.cluster = cluster
    return app
