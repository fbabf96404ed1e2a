"""processor-svc settings: one typed object, read from the environment."""

from functools import lru_cache

from pydantic import Field

from service_kit.settings import ObservabilitySettings, from_environment


class Settings(ObservabilitySettings):
    service_name: str = "processor-svc"
    # The simulated work per request; awaited, so it never blocks the event loop.
    process_delay_seconds: float = Field(default=0.5, ge=0, le=30)


@lru_cache
def get_settings() -> Settings:
    """From the environment; an invalid value fails with one line naming the variable."""
    return from_environment(Settings)
