"""An HTTP request as plain data, so that it can cross a process boundary (Ray) and be run by another process's
FastAPI app in-process (ASGI), unchanged: the replica answers with the same handlers, validation and error bodies as
the single-process server."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

#: Hop-by-hop or per-connection headers that must not be copied onto a forwarded request or its answer.
_DROP_HEADERS = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding",
                           "accept-encoding", "content-encoding", "x-process-time"})


@dataclass(frozen=True)
class Forwarded:
    """One request: method, path, query pairs, headers, body bytes."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def with_query(self, **params: str | None) -> "Forwarded":
        query = tuple((k, v) for k, v in self.query if k not in params)
        query += tuple((k, v) for k, v in params.items() if v is not None)
        return Forwarded(self.method, self.path, query, self.headers, self.body)


@dataclass(frozen=True)
class Answer:
    """One response: status, headers (without the per-connection ones), body bytes."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    extra: dict = field(default_factory=dict)  # what the replica adds about itself (its id), never sent to clients

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def keep_headers(items) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in items if k.lower() not in _DROP_HEADERS)


class AsgiCaller:
    """Calls a FastAPI app in-process through httpx's ASGI transport (no socket, no lifespan: the caller runs the
    app's state itself). One client per event loop: httpx clients are bound to the loop they were opened in."""

    def __init__(self, app) -> None:
        self.app = app
        self._clients: dict[int, object] = {}

    def _client(self):
        import asyncio

        import httpx

        loop = asyncio.get_running_loop()
        client = self._clients.get(id(loop))
        if client is None:
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://replica",
                                       timeout=None)
            self._clients[id(loop)] = client
        return client

    async def __call__(self, req: Forwarded) -> Answer:
        url = req.path + (f"?{urlencode(req.query)}" if req.query else "")
        # identity: the ingress compresses for its client; a replica compressing for the ingress would be wasted work
        headers = [*req.headers, ("accept-encoding", "identity")]
        r = await self._client().request(req.method, url, headers=headers, content=req.body)
        # X-Process-Time is per-connection (dropped by keep_headers): the caller may read it from here
        process_time = r.headers.get("x-process-time")
        return Answer(r.status_code, keep_headers(r.headers.multi_items()) + (
            (("x-process-time", process_time),) if process_time else ()), r.content)
