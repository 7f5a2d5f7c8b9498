"""(filled in by the API work of issue 4)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
