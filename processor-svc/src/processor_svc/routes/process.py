import asyncio
from time import perf_counter

from fastapi import APIRouter, Request

from processor_svc.deps import RequireJson, metrics_of, settings_of
from processor_svc.schemas import ProcessRequest, ProcessResult
from service_kit.errors import UNDECODABLE_BODY_RESPONSE, error_doc

router = APIRouter(tags=["process"])


@router.post(
    "/process",
    summary="Simulate about half a second of work and echo the data",
    dependencies=[RequireJson],
    responses={
        **UNDECODABLE_BODY_RESPONSE,
        415: error_doc("The body is not application/json"),
    },
)
async def process(body: ProcessRequest, request: Request) -> ProcessResult:
    start = perf_counter()
    await asyncio.sleep(settings_of(request).process_delay_seconds)
    # Only the size is recorded: the payload itself is never logged.
    metrics_of(request).payload_bytes.inc(len(body.data.encode()))
    return ProcessResult(
        echo=body.data, length=len(body.data), processing_seconds=round(perf_counter() - start, 4)
    )
