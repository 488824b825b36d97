"""The job queue: FIFO, task ids, per-task interrupt/cancel, A1111's progress maths and "Approx cheap" previews."""

from __future__ import annotations

import re
import threading
import time

import pytest
import torch

from webui.core import queue as q
from webui.core.queue import DuplicateTaskId, JobQueue, ProgressTracker, TaskCancelled


@pytest.fixture
def jq():
    queue = JobQueue()
    yield queue
    queue.stop()


def _blocker(started: threading.Event, release: threading.Event, result="blocked"):
    def fn(progress):
        started.set()
        assert release.wait(10)
        return result

    return fn


def test_fifo_and_task_ids(jq):
    order = []
    futures = [jq.submit("txt2img", lambda p, i=i: order.append(i) or i) for i in range(3)]
    forced = jq.submit("txt2img", lambda p: "forced", task_id="task(mine)")
    assert [f.result(10) for f in futures] == [0, 1, 2] and forced.result(10) == "forced"
    assert order == [0, 1, 2]
    assert all(re.fullmatch(r"task\(txt2img-[A-Z0-9]{7}\)", f.task_id) for f in futures)
    assert len({f.task_id for f in futures}) == 3
    assert forced.task_id == "task(mine)"
    assert jq.finished_tasks()[-1] == "task(mine)"
    assert jq.task_status("task(mine)").status == q.FINISHED


def test_queue_positions_and_state_while_running(jq):
    started, release = threading.Event(), threading.Event()
    running = jq.submit("txt2img", _blocker(started, release), task_id="task(a)", job="scripts_txt2img")
    assert started.wait(10)
    b = jq.submit("txt2img", lambda p: "b", task_id="task(b)")
    c = jq.submit("txt2img", lambda p: "c", task_id="task(c)")
    assert jq.current_task == "task(a)"
    assert jq.pending_tasks() == ["task(b)", "task(c)"]
    st = jq.task_status("task(c)")
    assert (st.status, st.queue_position, st.queue_size) == (q.QUEUED, 2, 2)
    assert jq.task_status("task(a)").status == q.RUNNING
    state = jq.progress.state_dict()
    assert list(state) == ["skipped", "interrupted", "stopping_generation", "job", "job_count", "job_timestamp",
                           "job_no", "sampling_step", "sampling_steps"]
    assert state["job"] == "scripts_txt2img" and state["job_count"] == -1 and state["job_timestamp"] != "0"
    release.set()
    assert (running.result(10), b.result(10), c.result(10)) == ("blocked", "b", "c")
    time.sleep(0.05)
    assert jq.progress.job_count == 0 and jq.progress.job == "" and jq.current_task is None


def test_interrupt_by_id_cancels_a_queued_task_only(jq):
    started, release = threading.Event(), threading.Event()
    ran = []
    a = jq.submit("txt2img", _blocker(started, release), task_id="task(a)")
    assert started.wait(10)
    b = jq.submit("txt2img", lambda p: ran.append("b"), task_id="task(b)")
    c = jq.submit("txt2img", lambda p: ran.append("c") or "c", task_id="task(c)")
    assert jq.interrupt("task(b)") == q.CANCELLED
    assert jq.pending_tasks() == ["task(c)"]
    assert jq.progress.interrupted is False  # the running task is not touched
    with pytest.raises(TaskCancelled):
        b.result(10)
    release.set()
    assert a.result(10) == "blocked" and c.result(10) == "c"
    assert ran == ["c"]
    assert jq.task_status("task(b)").status == q.CANCELLED
    assert jq.interrupt("task(b)") == q.CANCELLED  # asking again: already cancelled
    assert jq.interrupt("task(never)") == q.UNKNOWN


def test_interrupt_by_id_stops_only_that_running_task(jq):
    seen = {}

    def sampler(name):
        def fn(progress):
            for i in range(1, 200):
                if progress.should_stop():
                    break
                progress.step(i, 200)
                time.sleep(0.005)
            seen[name] = (progress.interrupted, progress.sampling_step)
            return name

        return fn

    a = jq.submit("txt2img", sampler("a"), task_id="task(a)")
    b = jq.submit("txt2img", sampler("b"), task_id="task(b)")
    while jq.current_task != "task(a)" or jq.progress.sampling_step < 3:
        time.sleep(0.005)
    assert jq.interrupt("task(b)") == q.CANCELLED  # b is queued: cancelled; a runs on untouched
    assert jq.progress.interrupted is False and jq.current_task == "task(a)"
    assert jq.interrupt("task(a)") == q.RUNNING
    assert a.result(10) == "a"
    assert seen["a"][0] is True and seen["a"][1] < 198
    assert jq.task_status("task(a)").status == q.INTERRUPTED
    with pytest.raises(TaskCancelled):
        b.result(10)


def test_plain_interrupt_then_next_job_starts_clean(jq):
    started, release = threading.Event(), threading.Event()
    a = jq.submit("txt2img", _blocker(started, release))
    assert started.wait(10)
    b = jq.submit("txt2img", lambda p: p.interrupted)
    assert jq.interrupt() == q.RUNNING  # A1111 POST /interrupt: the running job only
    release.set()
    a.result(10)
    assert b.result(10) is False  # State.begin cleared the flag for the next job


def test_interrupted_stays_true_after_the_job(jq):
    """A1111 State.end() leaves ``interrupted`` as it was: /progress shows it until the next job begins."""
    jq.submit("txt2img", lambda p: p.interrupt()).result(10)
    time.sleep(0.05)
    assert jq.progress.state_dict()["interrupted"] is True and jq.progress.job_count == 0


def test_duplicate_forced_id_is_refused_while_active(jq):
    started, release = threading.Event(), threading.Event()
    jq.submit("txt2img", _blocker(started, release), task_id="task(x)")
    assert started.wait(10)
    with pytest.raises(DuplicateTaskId):
        jq.submit("txt2img", lambda p: None, task_id="task(x)")
    release.set()
    time.sleep(0.05)
    assert jq.submit("txt2img", lambda p: "again", task_id="task(x)").result(10) == "again"  # done: reusable


def test_a_failing_job_fails_alone(jq):
    def boom(progress):
        raise RuntimeError("bad")

    bad = jq.submit("txt2img", boom, task_id="task(bad)")
    good = jq.submit("txt2img", lambda p: 7)
    with pytest.raises(RuntimeError, match="bad"):
        bad.result(10)
    assert good.result(10) == 7
    st = jq.task_status("task(bad)")
    assert st.status == q.FAILED and st.record.message == "RuntimeError: bad"
    assert "task(bad)" not in jq.finished_tasks()  # A1111 marks only normal ends finished


def test_stop_cancels_what_is_still_queued():
    jq = JobQueue()
    started, release = threading.Event(), threading.Event()
    running = jq.submit("t", _blocker(started, release))
    assert started.wait(10)
    waiting = jq.submit("t", lambda p: "never")
    threading.Timer(0.2, release.set).start()
    jq.stop()
    assert running.result(10) == "blocked"
    with pytest.raises(TaskCancelled):
        waiting.result(1)
    assert jq.pending_tasks() == []


def test_finished_list_keeps_16():
    jq = JobQueue()
    try:
        for i in range(20):
            jq.submit("t", lambda p: None, task_id=f"task({i})").result(10)
        assert jq.finished_tasks() == [f"task({i})" for i in range(4, 20)]
    finally:
        jq.stop()


def test_a1111_progress_formulas():
    t = ProgressTracker()
    assert t.api_progress() == (0.0, 0.0)  # idle
    t.job_count, t.job_no, t.sampling_step, t.sampling_steps = 2, 1, 5, 10
    t.time_start = time.time() - 10.0
    progress, eta = t.api_progress()
    assert progress == pytest.approx(0.01 + 0.5 + 0.25)
    assert eta == pytest.approx(10 / 0.76 - 10, rel=1e-3)
    progress, eta = t.internal_progress()
    assert progress == pytest.approx(0.75) and eta == pytest.approx(10 / 0.75 - 10, rel=1e-3)
    t.job_count = -1  # just begun: A1111 shows 0.01
    assert t.api_progress()[0] == pytest.approx(0.01)
    assert t.internal_progress() == (0.0, None)


def test_step_is_zero_based_and_batches_are_named():
    t = ProgressTracker(options=lambda k: {"live_previews_enable": False}.get(k, 10))
    t.begin("scripts_txt2img", "task(x)")
    t.job_count = 3
    t.job_no = 1
    assert t.job == "Batch 2 out of 3"
    t.step(4, 4)
    assert (t.sampling_step, t.sampling_steps) == (3, 4)  # k-diffusion's i of the last step


def _options(**over):
    base = {"live_previews_enable": True, "show_progress_every_n_steps": 2, "show_progress_grid": True, "n_rows": -1,
            "grid_prevent_empty_spots": False, "show_progress_type": "Approx cheap"}
    base.update(over)
    return base.__getitem__


def test_cheap_preview_every_n_steps_with_a1111_coefficients():
    t = ProgressTracker(options=_options())
    latent = torch.zeros(1, 4, 2, 3)
    latent[:, 0] = 1.0
    t.step(1, 4, latent)  # sampling_step 0: 0 % 2 == 0 -> preview
    assert t.id_live_preview == 1
    image = t.current_image
    assert image.size == (3, 2) and image.mode == "RGB"
    # (coef * 0.5 + 0.5) * 255, truncated: channel 0 of SD1/SD2 is (0.298, 0.207, 0.208)
    assert image.getpixel((0, 0)) == (165, 153, 154)
    t.step(2, 4, latent)  # sampling_step 1: no new preview
    assert t.id_live_preview == 1
    t.step(3, 4, latent)
    assert t.id_live_preview == 2

    sdxl = ProgressTracker(options=_options(), model_arch=lambda: "SDXL")
    sdxl.step(1, 4, latent)
    assert sdxl.current_image.getpixel((1, 1)) == (171, 180, 183)  # SDXL channel 0: (0.3448, 0.4168, 0.4395)

    off = ProgressTracker(options=_options(live_previews_enable=False))
    off.step(1, 4, latent)
    assert off.current_image is None and off.id_live_preview == 0


def test_cheap_preview_of_a_half_precision_latent():
    t = ProgressTracker(options=_options(show_progress_every_n_steps=1))
    latent = torch.zeros(1, 4, 2, 2, dtype=torch.float16)
    latent[:, 1] = 1.0  # channel 1: (0.187, 0.286, 0.173)
    t.step(1, 2, latent)
    assert t.current_image.getpixel((0, 0)) == (int(255 * 0.5935), int(255 * 0.643), int(255 * 0.5865))


def test_cheap_preview_of_a_batch_is_a_grid():
    t = ProgressTracker(options=_options(show_progress_every_n_steps=1))
    latent = torch.zeros(4, 4, 2, 2)
    latent[3, 3] = -1.0  # last image, channel 3: (0.184, 0.271, 0.473) * 0.5 + 0.5
    t.step(1, 2, latent)
    grid = t.current_image
    assert grid.size == (4, 4)  # 4 images -> 2 rows x 2 cols
    assert grid.getpixel((0, 0)) == (127, 127, 127)
    assert grid.getpixel((3, 3)) == (int(255 * 0.592), int(255 * 0.6355), int(255 * 0.7365))
    single = ProgressTracker(options=_options(show_progress_every_n_steps=1, show_progress_grid=False))
    single.step(1, 2, latent)
    assert single.current_image.size == (2, 2)


def test_future_by_task_id_for_a_page_that_comes_back(jq):
    """A1111 restore_progress: a reloaded page finds its task's Future by id -- queued, running, or among the last
    RECORDED_RESULTS_LIMIT finished ones -- and gets the result from it."""
    gate = threading.Event()
    running = jq.submit("t", lambda p: gate.wait(10) and "first", "task(a)")
    queued = jq.submit("t", lambda p: "second", "task(b)")
    assert jq.future("task(b)") is queued
    deadline = time.time() + 5
    while jq.current_task != "task(a)" and time.time() < deadline:
        time.sleep(0.01)
    assert jq.future("task(a)") is running
    gate.set()
    assert queued.result(5) == "second"
    assert jq.future("task(a)").result() == "first" and jq.future("task(b)").result() == "second"
    for i in range(q.RECORDED_RESULTS_LIMIT):
        jq.run("t", lambda p: None, f"task(more{i})")
    assert jq.future("task(a)") is None and jq.future("task(nope)") is None
