"""The cluster's control plane: a small Ray actor that knows the live replicas, which replica runs which task, the
current options, and carries control calls to one replica or to all of them.

Why not Ray Serve handles for control: a handle call goes to *some* replica and counts against its
``max_ongoing_requests``, so "/progress of task X" could not reach the replica running X, and a poll would wait
behind generations. Instead each replica long-polls this actor from a thread of its own (``poll``): it reports its
status and receives the calls meant for it at once; it runs them on its own app in-process and posts the answers with
its next poll. A replica that stops polling (it died) is dropped after ``STALE_S`` and its calls fail fast.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from typing import Any

#: A replica that has not polled for this long is taken for dead (it polls at least every POLL_WAIT_S).
STALE_S = 5.0
#: How long one poll waits for a call before it returns (and the replica reports its status again).
POLL_WAIT_S = 0.5
#: Task -> replica entries kept (the oldest forgotten first), like the queue's own task records.
TASK_OWNERS_LIMIT = 4096


class Coordinator:
    """Ray actor (``ray.remote(Coordinator)``, async): every method runs on the actor's event loop."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = dict(options)
        self.replicas: dict[str, dict] = {}  # id -> {"status": ..., "seen": monotonic time}
        self.owners: OrderedDict[str, str] = OrderedDict()
        self._mail: dict[str, list] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._waiting: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)

    # -- replicas ----------------------------------------------------------------------------------------------------

    def register(self, replica_id: str, status: dict) -> dict[str, Any]:
        """A replica starts (or restarts): returns the current options, which it applies before serving."""
        self.replicas[replica_id] = {"status": status, "seen": time.monotonic()}
        self._mail.setdefault(replica_id, [])
        self._wake.setdefault(replica_id, asyncio.Event())
        return dict(self.options)

    def leave(self, replica_id: str) -> None:
        self._drop(replica_id)

    def claim(self, replica_id: str, task_id: str) -> None:
        """The replica has accepted ``task_id``: progress, interrupt and skip for it go there."""
        self.owners[task_id] = replica_id
        self.owners.move_to_end(task_id)
        while len(self.owners) > TASK_OWNERS_LIMIT:
            self.owners.popitem(last=False)

    def forget(self, task_id: str) -> None:
        """The replica that claimed ``task_id`` died with it; the retry will claim it again."""
        self.owners.pop(task_id, None)

    def owners_of(self, task_ids: list[str]) -> dict[str, str | None]:
        """{task id: the live replica holding it, or None}."""
        live = self.live()
        return {t: (o if (o := self.owners.get(t)) in live else None) for t in task_ids}

    async def poll(self, replica_id: str, status: dict) -> list:
        """Report ``status``; get the calls [(call id, kind, payload)] waiting for this replica (waits up to
        POLL_WAIT_S for one)."""
        if replica_id not in self.replicas:
            self.register(replica_id, status)
        self.replicas[replica_id] = {"status": status, "seen": time.monotonic()}
        self._expire()
        wake = self._wake[replica_id]
        if not self._mail[replica_id]:
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), POLL_WAIT_S)
            except asyncio.TimeoutError:
                pass
        calls, self._mail[replica_id] = self._mail.get(replica_id, []), []
        return calls

    def answer(self, call_id: int, answer: Any) -> None:
        """A replica's answer to call ``call_id``."""
        future = self._waiting.pop(call_id, None)
        if future is not None and not future.done():
            future.set_result(answer)

    # -- calls -------------------------------------------------------------------------------------------------------

    async def call(self, replica_id: str, kind: str, payload: Any, timeout: float = 30.0) -> Any:
        """Run one call on one replica and return its answer; None when the replica is gone or does not answer."""
        if replica_id not in self.live():
            return None
        call_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        self._mail[replica_id].append((call_id, kind, payload))
        self._wake[replica_id].set()
        deadline = time.monotonic() + timeout
        try:
            while True:  # a replica that dies with the call in hand is noticed within a second or so
                await asyncio.wait({future}, timeout=1.0)
                if future.done():
                    return future.result()
                if replica_id not in self.live() or time.monotonic() > deadline:
                    return None
        finally:
            self._waiting.pop(call_id, None)

    async def call_task(self, task_id: str, kind: str, payload: Any, timeout: float = 30.0) -> tuple[str | None, Any]:
        """A call to the replica that claimed ``task_id``: (replica id, answer), or (None, None) when no live replica
        has it."""
        owner = self.owners.get(task_id)
        if owner is None or owner not in self.live():
            return None, None
        return owner, await self.call(owner, kind, payload, timeout)

    async def broadcast(self, kind: str, payload: Any, timeout: float = 120.0) -> dict[str, Any]:
        """The same call on every live replica, concurrently: {replica id: answer (None when it did not answer)}."""
        ids = list(self.live())
        answers = await asyncio.gather(*(self.call(r, kind, payload, timeout) for r in ids))
        return dict(zip(ids, answers))

    async def statuses(self, timeout: float = 5.0) -> dict[str, dict]:
        """{replica id: its status now} (asked of each replica; the last reported one when it does not answer)."""
        answers = await self.broadcast("status", None, timeout)
        last = self.live()
        return {rid: a if isinstance(a, dict) else last[rid] for rid, a in answers.items() if rid in last}

    def set_options(self, options: dict[str, Any]) -> None:
        """The stored options after a write (a replica that restarts starts from them)."""
        self.options = dict(options)

    # -- reading -----------------------------------------------------------------------------------------------------

    def live(self) -> dict[str, dict]:
        """{replica id: its last status} of the replicas polling now."""
        self._expire()
        return {rid: r["status"] for rid, r in self.replicas.items()}

    def owner(self, task_id: str) -> str | None:
        owner = self.owners.get(task_id)
        return owner if owner in self.live() else None

    def _expire(self) -> None:
        now = time.monotonic()
        for rid in [rid for rid, r in self.replicas.items() if now - r["seen"] > STALE_S]:
            self._drop(rid)

    def _drop(self, replica_id: str) -> None:
        self.replicas.pop(replica_id, None)
        self._mail.pop(replica_id, None)
        wake = self._wake.pop(replica_id, None)
        if wake is not None:
            wake.set()
