"""Application settings: known keys, plain values shown, secrets write-only and masked."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from pocketcode.domain.errors import NotFound
from pocketcode.services.app_settings import AppSettingsService, mask
from pocketcode.web.app import AppState
from pocketcode.web.deps import app_state, current_principal
from pocketcode.web.schemas import SettingIn
from pocketcode.web.security import Principal

router = APIRouter(prefix="/api", tags=["settings"])

State = Annotated[AppState, Depends(app_state)]
Me = Annotated[Principal, Depends(current_principal)]
Json = dict[str, Any]


def _setting_view(key: str, value: str | None) -> Json:
    return {"key": key, "isSet": value is not None, "masked": mask(value) if value else None}


@router.get("/settings/{key}", summary="Whether a setting is set, masked; never its value")
def get_setting(key: str, state: State, _me: Me) -> Json:
    return _setting_view(key, AppSettingsService(state.db, state.keyring).get(key))


@router.put("/settings/{key}", summary="Set a setting (stored encrypted)")
def put_setting(key: str, body: SettingIn, state: State, _me: Me) -> Json:
    AppSettingsService(state.db, state.keyring).set(key, body.value)
    return _setting_view(key, body.value)


@router.delete("/settings/{key}", summary="Remove a setting")
def delete_setting(key: str, state: State, _me: Me) -> Json:
    if not AppSettingsService(state.db, state.keyring).delete(key):
        raise NotFound(f"setting {key} is not set")
    return _setting_view(key, None)
