"""``GET /health``: liveness, the same on every service."""

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["healthy"] = "healthy"


@router.get("/health", summary="Liveness: answers without touching any dependency")
async def health() -> Health:
    return Health()
