"""What a client may ask for: the models (OpenAI's list and object, Open WebUI's list) and the voices in
Open WebUI's shape. Each listing reads the one source the speech route checks against (`model_names`,
the voice library and its aliases), so a listed name is always accepted."""

from __future__ import annotations

import time

from fastapi import APIRouter

from glmtts.http.errors import ModelNotFound
from glmtts.openai_compat import audio_models, model_names, model_object, models_list
from glmtts.service import Service


def discovery_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1")
    created = int(time.time())
    engine_name = service.engine.name

    @router.get("/models")
    def models() -> dict[str, object]:
        """The model names a speech request may give (OpenAI's and the engine's); all run the loaded engine."""
        return models_list(engine_name, created)

    @router.get("/models/{model_id}")
    def model(model_id: str) -> dict[str, object]:
        """One of those models, in OpenAI's model object shape; 404 `model_not_found` for any other id."""
        if model_id not in model_names(engine_name):
            raise ModelNotFound(model_id, engine_name)
        return model_object(model_id, created)

    @router.get("/audio/models")
    def open_webui_models() -> dict[str, list[dict[str, str]]]:
        """The same models in Open WebUI's shape: `{"models": [{"id": ...}]}`."""
        return audio_models(engine_name)

    @router.get("/audio/voices")
    def open_webui_voices() -> dict[str, list[dict[str, str]]]:
        """Every name `voice` may take, in Open WebUI's shape `{"voices": [{"id", "name"}]}`: the built-in
        voices, the saved ones (named as saved) and the aliases (named with the voice they stand for)."""
        return {"voices": [{"id": voice_id, "name": label} for voice_id, label in service.voices.listing()]}

    return router
