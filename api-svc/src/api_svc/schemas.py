"""Response bodies of the message routes."""

from pydantic import BaseModel, ConfigDict


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    text: str


class SearchResults(BaseModel):
    query: str
    count: int
    results: list[MessageOut]
