"""Cluster.dispatch without a Ray cluster: a replica lost with the request -> retried once, then 503; back-pressure
-> 503 (the ingress answers both with Retry-After)."""

import asyncio

import pytest
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

from webui.cluster.forward import Answer, Forwarded
from webui.cluster.ingress import Cluster, ClusterError
from webui.cluster.options import ClusterOptions


class _Remote:
    def __init__(self, fn):
        self.remote = fn


class FakeHandle:
    """A DeploymentHandle whose calls fail with the given errors, then answer."""

    def __init__(self, *failures):
        self.failures = list(failures)
        self.calls = []
        self.handle = _Remote(self._call)

    def options(self, **kwargs):
        self.calls.append(kwargs)
        return self

    def _call(self, req, task_id):
        async def answer():
            if self.failures:
                raise self.failures.pop(0)
            return Answer(200, body=b"{}")
        return answer()


class FakeCoordinator:
    def __init__(self):
        self.forgotten = []
        self.forget = _Remote(lambda task_id: self._forget(task_id))

    async def _forget(self, task_id):
        self.forgotten.append(task_id)


def _dispatch(handle, coordinator=None):
    cluster = Cluster(handle, coordinator or FakeCoordinator(), ClusterOptions(), state=None)
    return asyncio.run(cluster.dispatch(Forwarded("POST", "/sdapi/v1/txt2img"), "task(t)", "tiny-sd15.safetensors"))


def test_a_lost_replica_is_retried_once():
    handle, coordinator = FakeHandle(ActorDiedError()), FakeCoordinator()
    assert _dispatch(handle, coordinator).status == 200
    assert handle.calls == [{"multiplexed_model_id": "tiny-sd15.safetensors"}] * 2
    assert coordinator.forgotten == ["task(t)"]  # progress must not ask the dead replica about the retried task


def test_lost_twice_is_a_cluster_error():
    with pytest.raises(ClusterError, match="retry later"):
        _dispatch(FakeHandle(ActorDiedError(), ActorDiedError()))


def test_back_pressure_is_not_retried():
    handle = FakeHandle(BackPressureError(num_queued_requests=8, max_queued_requests=8))
    with pytest.raises(ClusterError, match="busy"):
        _dispatch(handle)
    assert len(handle.calls) == 1
