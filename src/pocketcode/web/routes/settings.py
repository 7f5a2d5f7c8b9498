"""Application settings: known keys, plain values shown, secrets write-only and masked.

The registry of keys and their checks lives in `services.app_settings`; an unknown key is a
404 that names the known ones.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import Field

from pocketcode.services.app_settings import KnownSettings, SettingView
from pocketcode.web.app import AppState
from pocketcode.web.deps import Me, State
from pocketcode.web.schemas import Out, SettingIn, errors

router = APIRouter(prefix="/api", tags=["settings"])

Key = Annotated[str, Path(max_length=255, description="A setting's key, e.g. default_model")]


class SettingOut(Out):
    key: str
    secret: bool = Field(description="Write-only: never returned, only `masked`")
    is_set: bool = Field(
        description="Whether a value is stored (else a plain one shows its default)"
    )
    value: str | None = Field(description="A plain setting's value or default; null for secrets")
    masked: str | None = Field(description="A stored secret's last characters at most")

    @classmethod
    def of(cls, view: SettingView) -> SettingOut:
        return cls(
            key=view.key,
            secret=view.secret,
            is_set=view.is_set,
            value=view.value,
            masked=view.masked,
        )


class SettingsOut(Out):
    settings: list[SettingOut]


def _settings(state: AppState) -> KnownSettings:
    return KnownSettings(state.db, state.keyring)


@router.get(
    "/settings",
    response_model=SettingsOut,
    response_model_by_alias=True,
    summary="Every known setting: plain values shown, secrets masked",
)
def list_settings(state: State, _me: Me) -> SettingsOut:
    return SettingsOut(settings=[SettingOut.of(v) for v in _settings(state).describe_all()])


@router.get(
    "/settings/{key}",
    response_model=SettingOut,
    response_model_by_alias=True,
    summary="One setting: a plain value shown, a secret masked",
    responses=errors(400, 404),
)
def get_setting(key: Key, state: State, _me: Me) -> SettingOut:
    return SettingOut.of(_settings(state).describe(key))


@router.put(
    "/settings/{key}",
    response_model=SettingOut,
    response_model_by_alias=True,
    summary="Set a setting (checked by its kind, stored encrypted)",
    responses=errors(400, 404),
)
def put_setting(key: Key, body: SettingIn, state: State, _me: Me) -> SettingOut:
    return SettingOut.of(_settings(state).update(key, body.value))


@router.delete(
    "/settings/{key}",
    status_code=204,
    response_class=Response,
    summary="Forget a setting (a plain one falls back to its default)",
    responses={204: {"description": "Not set any more"}, **errors(400, 404)},
)
def delete_setting(key: Key, state: State, _me: Me) -> Response:
    _settings(state).clear(key)
    return Response(status_code=204)
