"""FastAPI dependencies as `Annotated` types: the loaded state, the settings, the API key check.

Routes declare what they need (`state: ReadyState`, `_: ApiKey`); this module owns how each is
found and what a request gets when it is missing (503 while loading, 401 without the key).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.errors import APIError
from service.language_models import ServedModel
from service.metrics import ServiceMetrics
from service.retrieval import IndexHandle
from service.settings import Settings
from service.state import ServiceState


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


def get_ready_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    if state.status == "loading":
        raise APIError(503, "the service is still loading its models and index; retry shortly")
    if state.status == "failed":
        raise APIError(503, f"the service failed to load: {state.error}")
    return state


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


def get_index(state: Annotated[ServiceState, Depends(get_ready_state)]) -> IndexHandle:
    if state.index is None:
        raise APIError(400, "this server runs without an index (start it with --index)")
    return state.index


def require_api_key(request: Request) -> None:
    """When RETRO_API_KEY is set, mutating endpoints need `Authorization: Bearer <key>`."""
    settings: Settings = request.app.state.settings
    if settings.api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    expected = settings.api_key.get_secret_value()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise APIError(401, "this endpoint needs the server's API key: send 'Authorization: Bearer <key>'")


def find_model(state: ServiceState, model_id: str | None) -> ServedModel:
    """The requested model (default: RETRO); 404 with the served ids for an unknown one."""
    if model_id is None or model_id == "":
        return state.retro
    model = state.models.get(model_id)
    if model is None:
        served = ", ".join(state.models)
        raise APIError(
            404,
            f"the model {model_id!r} does not exist; this server serves: {served}",
            "model",
            "model_not_found",
        )
    return model


State = Annotated[ServiceState, Depends(get_state)]
ReadyState = Annotated[ServiceState, Depends(get_ready_state)]
AppSettings = Annotated[Settings, Depends(get_settings)]
Metrics = Annotated[ServiceMetrics, Depends(get_metrics)]
Index = Annotated[IndexHandle, Depends(get_index)]
ApiKey = Annotated[None, Depends(require_api_key)]
