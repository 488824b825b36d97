"""The one job queue: a single worker thread owns the models and the device.

UI and API submit work here and wait on a Future; jobs run FIFO; every job has a task id. The shared
:class:`ProgressTracker` is A1111's ``shared.state`` (what /sdapi/v1/progress shows, what interrupt and skip flip); the
queue itself keeps what A1111's ``modules/progress.py`` keeps (pending tasks, the current task, the last 16 finished
ones) plus, beyond A1111, a bounded record of every task's outcome so a client can ask about its own task by id.
A failing job fails only its own Future: the worker keeps serving.
"""

from __future__ import annotations

import logging
import queue
import random
import string
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: A1111 keeps the last 16 finished task ids (progress.finished_tasks) for /internal/progress ``completed``.
FINISHED_TASKS_LIMIT = 16
#: Outcomes kept for GET /sdapi/v1/progress?id_task= (ours): enough for many clients polling a little late.
TASK_RECORDS_LIMIT = 1024
#: How many finished tasks keep their result for a page that comes back (A1111 progress.recorded_results_limit).
RECORDED_RESULTS_LIMIT = 2

# Task outcomes (GET /sdapi/v1/progress?id_task=...).
QUEUED, RUNNING, FINISHED, INTERRUPTED, FAILED, CANCELLED, UNKNOWN = (
    "queued", "running", "finished", "interrupted", "failed", "cancelled", "unknown")


def new_task_id(kind: str) -> str:
    """A1111's ``task(txt2img-XXXXXXX)`` ids (7 chars from A-Z0-9; modules/call_queue.py create_task_id)."""
    return f"task({kind}-{''.join(random.choices(string.ascii_uppercase + string.digits, k=7))})"


class TaskCancelled(Exception):
    """The task was cancelled (POST /sdapi/v1/interrupt?id_task=...) before the worker started it."""

    def __init__(self, task_id: str):
        super().__init__(f"task {task_id} was cancelled before it started")
        self.task_id = task_id


class DuplicateTaskId(ValueError):
    """A forced task id that is already queued or running: progress and interrupt by id would be ambiguous."""

    def __init__(self, task_id: str):
        super().__init__(f"force_task_id {task_id!r} is already queued or running; task ids must be unique")
        self.task_id = task_id


class TaskFuture(Future):
    """A Future that knows its task id (the id /progress?id_task= and /interrupt?id_task= take)."""

    def __init__(self, task_id: str):
        super().__init__()
        self.task_id = task_id


def _option_defaults(key: str) -> Any:
    from webui.core.settings import OPTIONS_BY_KEY

    return OPTIONS_BY_KEY[key].default


@dataclass
class ProgressTracker:
    """What A1111's ``shared.state`` holds for /sdapi/v1/progress; written by the worker, read by anyone.

    The engine sets ``job_count``, ``job_no``, ``sampling_steps``, ``skipped`` and calls :meth:`step`; it reads
    ``interrupted`` and :meth:`should_stop`. ``options`` reads an option by key (the live-preview options);
    ``model_arch`` names the architecture of the model being sampled ("SDXL" picks the SDXL preview decoders);
    ``preview_decoder`` (webui.core.generation.previews.PreviewDecoder) turns latents into preview images by the
    option ``show_progress_type``; None: a decoder without weight files or model (Approx cheap only).
    """

    options: Callable[[str], Any] = _option_defaults
    model_arch: Callable[[], str | None] = lambda: None
    preview_decoder: Any = None
    job: str = ""
    job_count: int = 0
    _job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    interrupted: bool = False
    skipped: bool = False
    stopping_generation: bool = False
    job_timestamp: str = "0"
    time_start: float | None = None
    textinfo: str | None = None
    current_latent: Any = None
    current_image: Any = None
    current_image_sampling_step: int = 0
    id_live_preview: int = 0
    current_task: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- lifecycle (worker) ------------------------------------------------------------------------------------------

    def begin(self, job: str, task_id: str | None) -> None:
        """A1111 State.begin: job_count -1 until processing knows n_iter; flags and previews reset."""
        with self._lock:
            self.job = job
            self.job_count = -1
            self._job_no = 0
            self.sampling_step = 0
            self.interrupted = False
            self.skipped = False
            self.stopping_generation = False
            self.job_timestamp = time.strftime("%Y%m%d%H%M%S")
            self.time_start = time.time()
            self.textinfo = None
            self.current_latent = None
            self.current_image = None
            self.current_image_sampling_step = 0
            self.id_live_preview = 0
            self.current_task = task_id

    def end(self) -> None:
        """A1111 State.end: idle again (job "" and job_count 0); interrupted/skipped stay as they were."""
        with self._lock:
            self.job = ""
            self.job_count = 0
            self.current_latent = None
            self.current_task = None

    @property
    def job_no(self) -> int:
        return self._job_no

    @job_no.setter
    def job_no(self, value: int) -> None:
        """The engine moves to batch ``value``; A1111's processing loop names it "Batch i out of n" when n > 1, and
        with show_progress_every_n_steps -1 shows the previous batch's preview (State.nextjob)."""
        if value != self._job_no and self._previews_enabled() and self.options("show_progress_every_n_steps") == -1:
            self._set_preview()
        self._job_no = value
        if self.job_count > 1:
            self.job = f"Batch {value + 1} out of {self.job_count}"

    def set_job_no(self, value: int) -> None:
        """Move to ``value`` without the "Batch i out of n" naming of generation batches (A1111's trainers set
        ``state.job_no`` to the training step and keep their job name)."""
        self._job_no = value

    def step(self, step: int, steps: int, latent: Any = None) -> None:
        """The pipeline finished sampling step ``step`` (1-based) of ``steps``; ``latent`` is its denoised estimate.

        ``sampling_step`` holds A1111's 0-based index of that step (k-diffusion's ``i``). Every
        ``show_progress_every_n_steps`` steps (A1111 store_latent) the worker turns the latent into a preview image
        (method ``show_progress_type``), so readers never touch device tensors.
        """
        self.sampling_step = max(0, step - 1)
        self.sampling_steps = steps
        if latent is None:
            return
        self.current_latent = latent
        every = self.options("show_progress_every_n_steps")
        if self._previews_enabled() and every > 0 and self.sampling_step % every == 0:
            self._set_preview()

    def _previews_enabled(self) -> bool:
        return bool(self.options("live_previews_enable"))

    def _set_preview(self) -> None:
        latent = self.current_latent
        if latent is None or getattr(latent, "ndim", 0) != 4 or latent.shape[1] != 4:
            return
        try:
            if self.preview_decoder is None:
                from webui.core.generation.previews import PreviewDecoder

                self.preview_decoder = PreviewDecoder()
            method = str(self.options("show_progress_type"))
            if method == "Full":
                method = self.preview_decoder.method_for(method, bool(self.options("live_preview_allow_lowvram_full")))
            images = self.preview_decoder.images(latent.detach(), method,
                                                 sdxl=str(self.model_arch() or "").startswith("SDXL"))
            if self.options("show_progress_grid") and len(images) > 1:
                from webui.core.io.images import image_grid

                image = image_grid(images, batch_size=len(images), n_rows=int(self.options("n_rows")),
                                   grid_prevent_empty_spots=bool(self.options("grid_prevent_empty_spots")))
            else:
                image = images[0]
        except Exception:  # a preview must never break the generation (A1111 records and ignores it too)
            log.exception("live preview failed")
            return
        self.current_image = image
        self.current_image_sampling_step = self.sampling_step
        self.id_live_preview += 1

    # -- control (any thread) ----------------------------------------------------------------------------------------

    def interrupt(self) -> None:
        self.interrupted = True

    def skip(self) -> None:
        self.skipped = True

    def should_stop(self) -> bool:
        return self.interrupted or self.skipped

    # -- reading (any thread) ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """A1111 ``State.dict()``: the ``state`` object of GET /sdapi/v1/progress, keys in A1111's order."""
        return {
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopping_generation": self.stopping_generation,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": self.job_timestamp,
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }

    def api_progress(self) -> tuple[float, float]:
        """(progress, eta_relative) exactly as A1111's ``progressapi`` computes them: 0.01 + job_no/job_count +
        step/steps/job_count, the ETA from the unclamped value, then progress clamped to 1. (0, 0) when idle."""
        job_count, job_no = self.job_count, self.job_no
        step, steps, started = self.sampling_step, self.sampling_steps, self.time_start
        if job_count == 0:
            return 0.0, 0.0
        progress = 0.01
        if job_count > 0:
            progress += job_no / job_count
            if steps > 0:
                progress += 1 / job_count * step / steps
        elapsed = time.time() - started if started else 0.0
        eta_relative = elapsed / progress - elapsed
        return min(progress, 1.0), eta_relative

    def internal_progress(self) -> tuple[float, float | None]:
        """(progress, eta) as A1111's /internal/progress computes them: no 0.01 offset, eta None while 0."""
        job_count, job_no = self.job_count, self.job_no
        step, steps, started = self.sampling_step, self.sampling_steps, self.time_start
        progress = 0.0
        if job_count > 0:
            progress += job_no / job_count
            if steps > 0:
                progress += 1 / job_count * step / steps
        progress = min(progress, 1.0)
        elapsed = time.time() - started if started else 0.0
        eta = elapsed / progress - elapsed if progress > 0 else None
        return progress, eta

    @property
    def progress(self) -> float:
        """Fraction done, (job_no + step/steps) / job_count (what /internal/progress reports)."""
        return self.internal_progress()[0]

    @property
    def eta_relative(self) -> float:
        return self.api_progress()[1]


def idle_state_dict() -> dict:
    """The ``state`` shown for a task that is not running: what A1111's state holds before any job."""
    return ProgressTracker().state_dict()


# --------------------------------------------------------------------------------------------------------------------
# the queue
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Job:
    kind: str
    job: str
    fn: Callable[[ProgressTracker], Any]
    task_id: str
    future: TaskFuture
    queued_at: float


@dataclass(frozen=True)
class TaskRecord:
    """How a task ended, kept for GET /sdapi/v1/progress?id_task=."""

    status: str  # FINISHED, INTERRUPTED, FAILED or CANCELLED
    state: dict  # the task's last ``state`` (A1111 State.dict()) when it ended
    message: str | None = None


@dataclass(frozen=True)
class TaskStatus:
    """One task as the queue sees it: ``status`` and, while queued, its 1-based position among ``queue_size``."""

    task_id: str
    status: str
    queue_position: int | None = None
    queue_size: int = 0
    record: TaskRecord | None = None


class JobQueue:
    """FIFO of jobs run by one worker thread. Start it with :meth:`start`; nothing runs at construction.

    ``options`` and ``model_arch`` feed the live previews (see :class:`ProgressTracker`); without them the option
    defaults apply.
    """

    _STOP = object()

    def __init__(self, options: Callable[[str], Any] | None = None,
                 model_arch: Callable[[], str | None] | None = None) -> None:
        self.progress = ProgressTracker()
        self.configure_previews(options, model_arch)
        self._q: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # pending, current, finished, records -- and task switches on the tracker
        self._pending: OrderedDict[str, _Job] = OrderedDict()
        self._current: _Job | None = None
        self._finished: deque[str] = deque(maxlen=FINISHED_TASKS_LIMIT)
        self._records: OrderedDict[str, TaskRecord] = OrderedDict()
        self._results: OrderedDict[str, TaskFuture] = OrderedDict()  # the last finished tasks' futures

    def configure_previews(self, options: Callable[[str], Any] | None = None,
                           model_arch: Callable[[], str | None] | None = None, decoder: Any = None) -> None:
        """Where the live previews read their options, the sampled model's architecture, and the decoder that makes
        them (webui.core.generation.previews.PreviewDecoder: weight files, the model's VAE for "Full")."""
        if options is not None:
            self.progress.options = options
        if model_arch is not None:
            self.progress.model_arch = model_arch
        if decoder is not None:
            self.progress.preview_decoder = decoder

    # -- running -----------------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="generation-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 10) -> None:
        """Interrupt the running job, stop the worker, and cancel what is still queued (its waiters get
        :class:`TaskCancelled` instead of waiting forever)."""
        with self._lock:
            left = list(self._pending.values())
            self._pending.clear()
            for job in left:
                self._record(job.task_id, TaskRecord(CANCELLED, idle_state_dict()))
            if self._current is not None:
                self.progress.interrupt()
        for job in left:
            job.future.set_exception(TaskCancelled(job.task_id))
        if self._thread is not None:
            self._q.put(self._STOP)
            self._thread.join(timeout)
            self._thread = None

    def submit(self, kind: str, fn: Callable[[ProgressTracker], Any], task_id: str | None = None,
               job: str | None = None) -> TaskFuture:
        """Queue ``fn(progress)``; the returned Future carries its result or exception and its ``task_id``.

        ``task_id`` is the client's ``force_task_id`` (else a new ``task(<kind>-XXXXXXX)``); an id that is already
        queued or running raises :class:`DuplicateTaskId`. ``job`` is the ``state.job`` text while it runs
        (A1111: "scripts_txt2img" for API txt2img), ``kind`` by default.
        """
        self.start()
        task_id = task_id or new_task_id(kind)
        future = TaskFuture(task_id)
        item = _Job(kind, job or kind, fn, task_id, future, time.time())
        with self._lock:
            if task_id in self._pending or (self._current is not None and self._current.task_id == task_id):
                raise DuplicateTaskId(task_id)
            self._pending[task_id] = item
            self._records.pop(task_id, None)  # a reused id starts afresh
        self._q.put(item)
        return future

    def run(self, kind: str, fn: Callable[[ProgressTracker], Any], task_id: str | None = None) -> Any:
        """Submit and wait (for request threads)."""
        return self.submit(kind, fn, task_id).result()

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is self._STOP:
                return
            with self._lock:
                if self._pending.get(job.task_id) is not job:
                    continue  # cancelled while queued
                del self._pending[job.task_id]
                if not job.future.set_running_or_notify_cancel():
                    self._record(job.task_id, TaskRecord(CANCELLED, idle_state_dict()))
                    continue
                self._current = job
                self.progress.begin(job.job, job.task_id)
            ok, result, error = False, None, None
            try:
                result = job.fn(self.progress)
                ok = True
            except BaseException as e:  # the worker must survive any job failure
                if not isinstance(e, Exception):
                    log.exception("job %s aborted", job.kind)
                error = e
            with self._lock:
                interrupted = self.progress.interrupted
                self.progress.end()
                self._current = None
                self._results[job.task_id] = job.future
                while len(self._results) > RECORDED_RESULTS_LIMIT:
                    self._results.popitem(last=False)
                if ok:
                    self._finished.append(job.task_id)
                status = FAILED if not ok else INTERRUPTED if interrupted else FINISHED
                self._record(job.task_id, TaskRecord(status, self.progress.state_dict(),
                                                     None if error is None else f"{type(error).__name__}: {error}"))
            # The result goes out after state.end(), as in A1111: a client holding its response sees job_count 0.
            if ok:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)

    def _record(self, task_id: str, record: TaskRecord) -> None:
        self._records[task_id] = record
        self._records.move_to_end(task_id)
        while len(self._records) > TASK_RECORDS_LIMIT:
            self._records.popitem(last=False)

    # -- control -----------------------------------------------------------------------------------------------------

    def interrupt(self, task_id: str | None = None) -> str:
        """A1111 POST /interrupt: stop the running job (it still returns what it made). With ``task_id`` (ours):
        only that task -- interrupted when running, cancelled when queued. Returns the task's status then
        (RUNNING when a running task was interrupted, CANCELLED, a finished status, or UNKNOWN)."""
        cancelled = None
        with self._lock:
            if task_id is None:
                self.progress.interrupt()
                return RUNNING if self._current is not None else UNKNOWN
            if self._current is not None and self._current.task_id == task_id:
                self.progress.interrupt()
                return RUNNING
            job = self._pending.pop(task_id, None)
            if job is None:
                record = self._records.get(task_id)
                return record.status if record else UNKNOWN
            self._record(task_id, TaskRecord(CANCELLED, idle_state_dict()))
            cancelled = job
        cancelled.future.set_exception(TaskCancelled(task_id))
        return CANCELLED

    def skip(self) -> None:
        """A1111 POST /skip: end the current batch of the running job; the next batch runs."""
        self.progress.skip()

    # -- reading -----------------------------------------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def pending_tasks(self) -> list[str]:
        """Task ids queued and not started, oldest first (A1111 /internal/pending-tasks)."""
        with self._lock:
            return list(self._pending)

    @property
    def current_task(self) -> str | None:
        with self._lock:
            return self._current.task_id if self._current is not None else None

    def finished_tasks(self) -> list[str]:
        """The last 16 tasks that ended without an exception (A1111 progress.finished_tasks)."""
        with self._lock:
            return list(self._finished)

    def future(self, task_id: str) -> TaskFuture | None:
        """The Future of a queued or running task, or of one of the last finished ones (A1111 ``restore_progress``:
        a page that comes back after a reload follows its task, and gets its result, by the task id); else None."""
        with self._lock:
            if self._current is not None and self._current.task_id == task_id:
                return self._current.future
            job = self._pending.get(task_id)
            if job is not None:
                return job.future
            return self._results.get(task_id)

    def task_status(self, task_id: str) -> TaskStatus:
        with self._lock:
            if self._current is not None and self._current.task_id == task_id:
                return TaskStatus(task_id, RUNNING, queue_size=len(self._pending))
            if task_id in self._pending:
                position = list(self._pending).index(task_id) + 1
                return TaskStatus(task_id, QUEUED, position, len(self._pending))
            record = self._records.get(task_id)
            if record is not None:
                return TaskStatus(task_id, record.status, queue_size=len(self._pending), record=record)
            return TaskStatus(task_id, UNKNOWN, queue_size=len(self._pending))
