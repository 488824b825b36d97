"""Progress, interrupt and skip (A1111 §9): GET /sdapi/v1/progress, POST /sdapi/v1/interrupt and /skip, and the
UI's /internal/progress, /internal/pending-tasks and /internal/ping.

Without ``id_task`` these answer as A1111 does, about whatever job the worker runs. With ``id_task`` (ours) they
answer about that task only: a queued task's position, a running task's progress, a finished task's outcome --
never another client's job.
"""

from __future__ import annotations

import base64
import io

from fastapi import Query, Request
from fastapi.responses import JSONResponse

from webui.api.errors import ApiError
from webui.api.models import (
    EmptyResponse,
    InternalProgressRequest,
    InternalProgressResponse,
    PendingTasksResponse,
    ProgressResponse,
    TaskProgressResponse,
)
from webui.core import queue as q
from webui.core.io.images import encode_base64
from webui.state import AppState


def _state(request: Request) -> AppState:
    return request.app.state.webui


def _encode_preview(state: AppState, image) -> str:
    """A1111 encode_pil_to_base64 of the live preview: raw base64 in option samples_format."""
    return encode_base64(image, state.settings.get("samples_format"), None,
                         jpeg_quality=int(state.settings.get("jpeg_quality")))


def _running_progress(state: AppState, skip_current_image: bool) -> dict:
    """A1111 progressapi over the shared state."""
    tracker = state.queue.progress
    progress, eta_relative = tracker.api_progress()
    current_image = None
    if tracker.job_count != 0 and not skip_current_image and tracker.current_image is not None:
        current_image = _encode_preview(state, tracker.current_image)
    return ProgressResponse(progress=progress, eta_relative=eta_relative, state=tracker.state_dict(),
                            current_image=current_image, textinfo=tracker.textinfo).model_dump()


def _task_progress(state: AppState, id_task: str, skip_current_image: bool) -> dict:
    for _ in range(3):  # a running task may end while we read; then answer from its record
        status = state.queue.task_status(id_task)
        extra = {"id_task": id_task, "status": status.status, "queue_position": status.queue_position,
                 "queue_size": status.queue_size}
        if status.status == q.RUNNING:
            body = _running_progress(state, skip_current_image)
            if state.queue.current_task == id_task:
                return TaskProgressResponse(**body, **extra).model_dump()
            continue
        if status.status == q.QUEUED:
            textinfo = f"In queue: {status.queue_position}/{status.queue_size}"
            return TaskProgressResponse(progress=0.0, eta_relative=0.0, state=q.idle_state_dict(), textinfo=textinfo,
                                        **extra).model_dump()
        if status.record is not None:
            done = status.status in (q.FINISHED, q.INTERRUPTED)
            textinfo = status.record.message or status.status.capitalize()
            return TaskProgressResponse(progress=1.0 if done else 0.0, eta_relative=0.0, state=status.record.state,
                                        textinfo=textinfo, **extra).model_dump()
        return TaskProgressResponse(progress=0.0, eta_relative=0.0, state=q.idle_state_dict(), textinfo="Waiting...",
                                    **extra).model_dump()
    raise ApiError(503, f"task {id_task} kept changing state while being read; ask again")


def progress(
    request: Request,
    skip_current_image: bool = Query(False, description="do not encode the live preview"),
    id_task: str | None = Query(None, description="(ours) answer for this task only: queued (with queue_position), "
                                "running (its progress), finished/interrupted/failed/cancelled, or unknown"),
):
    """GET /sdapi/v1/progress: A1111's ProgressResponse; with ``id_task`` a TaskProgressResponse for that task."""
    state = _state(request)
    if id_task is not None:
        return JSONResponse(_task_progress(state, id_task, skip_current_image))
    return JSONResponse(_running_progress(state, skip_current_image))


def interrupt(
    request: Request,
    id_task: str | None = Query(None, description="(ours) interrupt this task if it runs, cancel it if it is queued; "
                                "other tasks are not touched"),
) -> EmptyResponse:
    """POST /sdapi/v1/interrupt: A1111 stops the running job, which still returns what it made. A task cancelled
    while queued answers its own request with a 409."""
    outcome = _state(request).queue.interrupt(id_task)
    if id_task is not None and outcome == q.UNKNOWN:
        raise ApiError(404, f"id_task: no queued, running or recent task {id_task!r}")
    return EmptyResponse()


def skip(request: Request) -> None:
    """POST /sdapi/v1/skip: A1111 ends the current batch of the running job; ``null``."""
    _state(request).queue.skip()


def internal_progress(body: InternalProgressRequest, request: Request) -> InternalProgressResponse:
    """POST /internal/progress (A1111 modules/progress.py progressapi), the UI's per-task poll."""
    state = _state(request)
    queue = state.queue
    id_task = body.id_task
    active = id_task is not None and queue.current_task == id_task
    pending = queue.pending_tasks()
    queued = id_task in pending
    completed = id_task in queue.finished_tasks()
    if not active:
        textinfo = f"In queue: {pending.index(id_task) + 1}/{len(pending)}" if queued else "Waiting..."
        return InternalProgressResponse(active=False, queued=queued, completed=completed, id_live_preview=-1,
                                        textinfo=textinfo)
    tracker = queue.progress
    progress, eta = tracker.internal_progress()
    live_preview, id_live_preview = None, body.id_live_preview
    image = tracker.current_image
    if state.settings.get("live_previews_enable") and body.live_preview and image is not None \
            and tracker.id_live_preview != body.id_live_preview:
        preview_id = tracker.id_live_preview
        fmt = state.settings.get("live_previews_image_format")
        buffer = io.BytesIO()
        if fmt == "png":
            # A1111: optimize small previews only; large ones get the fastest compression.
            kwargs = {"optimize": True} if max(image.size) <= 256 else {"optimize": False, "compress_level": 1}
        else:
            kwargs = {}
            if fmt == "jpeg" and image.mode == "RGBA":
                image = image.convert("RGB")
        image.save(buffer, format=fmt, **kwargs)
        live_preview = f"data:image/{fmt};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
        id_live_preview = preview_id
    return InternalProgressResponse(active=True, queued=queued, completed=completed, progress=progress, eta=eta,
                                    live_preview=live_preview, id_live_preview=id_live_preview,
                                    textinfo=tracker.textinfo)


def pending_tasks(request: Request) -> PendingTasksResponse:
    """GET /internal/pending-tasks: ids queued and not started, oldest first."""
    tasks = _state(request).queue.pending_tasks()
    return PendingTasksResponse(size=len(tasks), tasks=tasks)


def ping() -> EmptyResponse:
    """GET /internal/ping: ``{}`` (the UI's liveness check)."""
    return EmptyResponse()
