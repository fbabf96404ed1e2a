from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from api_svc.deps import DatabaseDep
from service_kit.errors import error_doc

router = APIRouter(tags=["health"])


class Ready(BaseModel):
    status: Literal["ready"] = "ready"


@router.get(
    "/ready",
    summary="Readiness: 200 when PostgreSQL answers, 503 envelope when it does not",
    responses={503: error_doc("The database is unavailable")},
)
async def ready(database: DatabaseDep) -> Ready:
    await database.ping()
    return Ready()
