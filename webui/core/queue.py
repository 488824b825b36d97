"""The one job queue: a single worker thread owns the models and the device.

UI and API submit work here and wait on a Future; jobs run FIFO; /progress, interrupt and skip read and flip the
shared :class:`ProgressTracker`. A failing job fails only its own Future: the worker keeps serving.
"""

from __future__ import annotations

import logging
import queue
import random
import string
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)


def new_task_id(kind: str) -> str:
    """A1111's ``task(txt2img-XXXXXXX)`` ids (7 chars from A-Z0-9)."""
    return f"task({kind}-{''.join(random.choices(string.ascii_uppercase + string.digits, k=7))})"


@dataclass
class ProgressTracker:
    """What A1111's ``shared.state`` holds for /sdapi/v1/progress, owned by the worker, read by anyone."""

    job: str = ""
    job_count: int = 0
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    interrupted: bool = False
    skipped: bool = False
    job_timestamp: str = "0"
    time_start: float | None = None
    textinfo: str | None = None
    current_latent: Any = None
    current_image: Any = None
    current_image_sampling_step: int = 0
    id_live_preview: int = 0
    current_task: str | None = None
    pending: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self, job: str, task_id: str | None) -> None:
        with self._lock:
            self.job = job
            self.job_count = 1
            self.job_no = 0
            self.sampling_step = 0
            self.sampling_steps = 0
            self.interrupted = False
            self.skipped = False
            self.job_timestamp = time.strftime("%Y%m%d%H%M%S")
            self.time_start = time.time()
            self.textinfo = None
            self.current_latent = None
            self.current_image = None
            self.current_image_sampling_step = 0
            self.current_task = task_id
            if task_id in self.pending:
                self.pending.remove(task_id)

    def end(self, task_id: str | None, ok: bool) -> None:
        with self._lock:
            self.job = ""
            self.job_count = 0
            self.current_latent = None
            self.time_start = None
            if ok and task_id:
                self.finished.append(task_id)
                del self.finished[:-16]
            self.current_task = None

    def step(self, step: int, steps: int, latent: Any = None) -> None:
        self.sampling_step = step
        self.sampling_steps = steps
        if latent is not None:
            self.current_latent = latent

    def interrupt(self) -> None:
        self.interrupted = True

    def skip(self) -> None:
        self.skipped = True

    def should_stop(self) -> bool:
        return self.interrupted or self.skipped

    @property
    def progress(self) -> float:
        """A1111's progress: (job_no + step/steps) / job_count."""
        if not self.job_count:
            return 0.0
        frac = self.sampling_step / self.sampling_steps if self.sampling_steps else 0.0
        return min(1.0, (self.job_no + frac) / self.job_count)

    @property
    def eta_relative(self) -> float:
        if not self.time_start or self.progress <= 0:
            return 0.0
        elapsed = time.time() - self.time_start
        return elapsed / self.progress - elapsed


@dataclass
class _Job:
    kind: str
    fn: Callable[[ProgressTracker], Any]
    task_id: str | None
    future: Future


class JobQueue:
    """FIFO of jobs run by one worker thread. Start it with :meth:`start`; nothing runs at construction."""

    _STOP = object()

    def __init__(self) -> None:
        self.progress = ProgressTracker()
        self._q: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="generation-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 10) -> None:
        if self._thread is not None:
            self.progress.interrupt()
            self._q.put(self._STOP)
            self._thread.join(timeout)
            self._thread = None

    def submit(self, kind: str, fn: Callable[[ProgressTracker], Any], task_id: str | None = None) -> Future:
        """Queue ``fn(progress)``; the returned Future carries its result or exception."""
        self.start()
        future: Future = Future()
        if task_id:
            with self.progress._lock:
                self.progress.pending.append(task_id)
        self._q.put(_Job(kind, fn, task_id, future))
        return future

    def run(self, kind: str, fn: Callable[[ProgressTracker], Any], task_id: str | None = None) -> Any:
        """Submit and wait (for request threads)."""
        return self.submit(kind, fn, task_id).result()

    @property
    def pending_count(self) -> int:
        return self._q.qsize()

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is self._STOP:
                return
            if not job.future.set_running_or_notify_cancel():
                continue
            self.progress.begin(job.kind, job.task_id)
            ok = False
            try:
                result = job.fn(self.progress)
                ok = True
                job.future.set_result(result)
            except BaseException as e:  # the worker must survive any job failure
                if not isinstance(e, Exception):
                    log.exception("job %s aborted", job.kind)
                job.future.set_exception(e)
            finally:
                self.progress.end(job.task_id, ok)
