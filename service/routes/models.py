"""GET /v1/models: the RETRO model and the comparison models (a second model, the retrieval-in-prompt
comparator), in OpenAI's list shape, each with its role."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ReadyState

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(state: ReadyState):
    created = int(state.started)
    data = []
    for model in state.models.values():
        data.append(
            {
                "id": model.id,
                "object": "model",
                "created": created,
                "owned_by": "retro",
                "kind": model.lm.kind,  # the checkpoint format: "retro" (ours) or "huggingface"
                "role": state.role(model),
                "uses_retrieval": model.lm.uses_retrieval and state.index is not None,
                "parameters": model.parameters,
                "context_length": model.lm.max_seq_len,
            }
        )
    return {"object": "list", "data": data}
