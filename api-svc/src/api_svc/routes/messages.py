from time import perf_counter
from typing import Annotated

from fastapi import APIRouter, Path, Query

from api_svc.deps import DatabaseDep, MetricsDep
from api_svc.schemas import MessageOut, SearchResults
from api_svc.statements import MESSAGE_BY_ID, SEARCH
from service_kit.errors import AppError, ErrorCode, error_doc

router = APIRouter(prefix="/message", tags=["messages"])

# PostgreSQL's integer: anything outside it is a 422, never an overflow in the driver.
MessageId = Annotated[int, Path(ge=1, le=2_147_483_647, description="Message id")]


def _like_pattern(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Declared before /{id} so that "search" is never taken for an id.
@router.get(
    "/search",
    summary="Substring search (deliberately slow until `make fix-search` adds an index)",
    responses={503: error_doc("The database is unavailable")},
)
async def search_messages(
    database: DatabaseDep,
    metrics: MetricsDep,
    # No NUL: PostgreSQL text cannot hold one (psycopg refuses to send it).
    q: Annotated[
        str,
        Query(min_length=1, max_length=64, pattern=r"^[^\x00]*$", description="Substring to find"),
    ],
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> SearchResults:
    start = perf_counter()
    rows = await database.fetch(SEARCH, {"pattern": _like_pattern(q), "limit": limit})
    metrics.search_seconds.observe(perf_counter() - start)
    results = [MessageOut(id=id, text=text) for id, text in rows]
    return SearchResults(query=q, count=len(results), results=results)


@router.get(
    "/{id}",
    summary="One message by id",
    responses={
        404: error_doc("No message with this id"),
        503: error_doc("The database is unavailable"),
    },
)
async def get_message(id: MessageId, database: DatabaseDep, metrics: MetricsDep) -> MessageOut:
    rows = await database.fetch(MESSAGE_BY_ID, {"id": id})
    if not rows:
        metrics.not_found.inc()
        raise AppError(404, ErrorCode.NOT_FOUND, f"Message {id} not found")
    metrics.found.inc()
    ((found_id, text),) = rows
    return MessageOut(id=found_id, text=text)
