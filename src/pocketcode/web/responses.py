"""JSON responses of the hot routes, encoded once.

A route that returns a dict has FastAPI validate it against the route's `response_model` and
serialise the validated model: for a page of 50 messages (~70 KB) that was as much CPU as
reading the page. The routes the clients poll (a session, the session list, a page of
messages) build their body in the model's shape themselves (`web.presenters`) and return it
through `model_response`; they keep `response_model`, which documents the shape in the OpenAPI
schema, and the schema and shape tests (tests/api) check that the bodies match it.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response
from pydantic import BaseModel


def model_response(
    content: dict[str, Any], model: type[BaseModel], *, exclude_unset: bool = False
) -> Response:
    """`content` as JSON, encoded by orjson. What orjson cannot encode (an integer past 64 bits
    in free-form metadata) goes the way FastAPI would have taken: validated by `model` and
    dumped by pydantic."""
    try:
        body = orjson.dumps(content)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        body = (
            model.model_validate(content)
            .model_dump_json(by_alias=True, exclude_unset=exclude_unset)
            .encode()
        )
    return Response(body, media_type="application/json")
