"""Request and response bodies of /process."""

from pydantic import BaseModel, ConfigDict, Field

MAX_DATA_LENGTH = 10_000


class ProcessRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    data: str = Field(min_length=1, max_length=MAX_DATA_LENGTH, examples=["hello"])


class ProcessResult(BaseModel):
    echo: str
    length: int = Field(description="Characters in data.")
    processing_seconds: float = Field(description="Time spent on the simulated work.")
