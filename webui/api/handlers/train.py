"""Creation and training routes: POST /sdapi/v1/create/embedding, /create/hypernetwork, /train/embedding,
/train/hypernetwork (A1111 api.py ``create_embedding``, ``create_hypernetwork``, ``train_embedding``,
``train_hypernetwork``; spec section 13).

The body is a JSON object of A1111's keyword arguments. Thin: the arguments are read by
``webui.core.train.args.from_kwargs`` (one mapping), checked, and the work runs as one job on the queue (the worker
owns the model), so /sdapi/v1/progress shows its steps, loss and ETA and /sdapi/v1/interrupt stops it. Success
answers are A1111's strings. Where A1111 answers bad input with a 500 (a missing argument) or a 200 carrying an
error (a file that exists, a bad dataset folder, a malformed learning rate), we answer 4xx in A1111's error shape
naming the argument; only a failure in the middle of training keeps A1111's 200 ``... error: <message>``, since
what was saved until then stays.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import Body, Request

from webui.api.models import A1111Model
from webui.core.train.args import (
    CreateEmbeddingArgs,
    CreateHypernetworkArgs,
    TrainEmbeddingArgs,
    TrainHypernetworkArgs,
    TrainingInputError,
    from_kwargs,
    validate_train,
)
from webui.core.train.common import TrainingError
from webui.state import AppState, training_services

log = logging.getLogger(__name__)


class CreateResponse(A1111Model):
    """A1111 models.CreateResponse."""

    info: str


class TrainResponse(A1111Model):
    """A1111 models.TrainResponse."""

    info: str


def _state(request: Request) -> AppState:
    return request.app.state.webui


async def _on_worker(state: AppState, kind: str, job: str, fn, task_id: str | None = None) -> Any:
    return await asyncio.wrap_future(state.queue.submit(kind, fn, task_id=task_id, job=job))


async def create_embedding(request: Request, args: dict = Body(...)) -> CreateResponse:
    from webui.core.train.textual_inversion import create_embedding as create

    state = _state(request)
    a = from_kwargs(CreateEmbeddingArgs, args)
    services = training_services(state)
    filename = await _on_worker(state, "create_embedding", "create_embedding", lambda p: create(services, a))
    return CreateResponse(info=f"create embedding filename: {filename}")


async def create_hypernetwork(request: Request, args: dict = Body(...)) -> CreateResponse:
    from webui.core.train.hypernetwork import create_hypernetwork as create

    state = _state(request)
    a = from_kwargs(CreateHypernetworkArgs, args)
    services = training_services(state)
    filename = await _on_worker(state, "create_hypernetwork", "create_hypernetwork", lambda p: create(services, a))
    return CreateResponse(info=f"create hypernetwork filename: {filename}")


async def _train(request: Request, args: dict, cls, kind: str, train_fn) -> TrainResponse:
    state = _state(request)
    a = from_kwargs(cls, args)
    services = training_services(state)
    validate_train(a, services.templates())  # refused before it queues; the job checks again (files may change)

    def job(progress):
        try:
            return train_fn(services, a, progress), None
        except (TrainingInputError, TrainingError):
            raise
        except Exception as e:  # A1111: the error goes into the answer; what was saved until then stays
            log.exception("training %s failed", a.name)
            return None, e

    result, error = await _on_worker(state, kind, kind.replace("_", "-"), job, task_id=a.id_task or None)
    filename = result.filename if result is not None else ""
    # A1111 says "train embedding" for hypernetworks too
    return TrainResponse(info=f"train embedding complete: filename: {filename} error: {error}")


async def train_embedding(request: Request, args: dict = Body(...)) -> TrainResponse:
    from webui.core.train.textual_inversion import train_embedding as train

    return await _train(request, args, TrainEmbeddingArgs, "train_embedding", train)


async def train_hypernetwork(request: Request, args: dict = Body(...)) -> TrainResponse:
    from webui.core.train.hypernetwork import train_hypernetwork as train

    return await _train(request, args, TrainHypernetworkArgs, "train_hypernetwork", train)
