"""Load profile for the stack, sent through the gateway (never to a service directly).

Compose (service `locust`, profile `load`; target http://gateway:8080):

    docker compose --profile load run --rm locust
        headless, LOAD_USERS users (spawned at LOAD_SPAWN_RATE/s) for LOAD_RUN_TIME, then exits
        with locust's status (1 if any request failed)
    docker compose --profile load run --rm -e LOCUST_HEADLESS=false -p 127.0.0.1:8089:8089 locust
        web UI on http://127.0.0.1:8089 instead (start and stop the run from the browser)

Natively, against a gateway on this machine:

    locust -f tests/load/locustfile.py --host http://127.0.0.1:8080 \
        --headless --users 20 --spawn-rate 5 --run-time 1m

The mix per user: mostly reads by id, some searches (the slow route), some /process calls
(~0.5 s each) and a few health probes. Every non-2xx answer counts as a failure, including
the gateway's 429 RATE_LIMITED, so a run that hits a limit says so.

Tunables (environment): LOAD_MAX_MESSAGE_ID (ids 1..N are fetched, default 10, the seeded
readable rows), LOAD_SEARCH_WORDS (comma separated), LOAD_WAIT_MIN / LOAD_WAIT_MAX (seconds
between a user's requests).
"""

import os
import random
import string

from locust import HttpUser, between, task

MAX_MESSAGE_ID = int(os.environ.get("LOAD_MAX_MESSAGE_ID", "10"))
SEARCH_WORDS = [
    word.strip()
    for word in os.environ.get(
        "LOAD_SEARCH_WORDS", "trace,latency,gateway,index,metric,worker,budget,replica"
    ).split(",")
    if word.strip()
]
WAIT_MIN = float(os.environ.get("LOAD_WAIT_MIN", "0.1"))
WAIT_MAX = float(os.environ.get("LOAD_WAIT_MAX", "1.0"))


def _payload() -> dict[str, str]:
    """A small random body for POST /process (well below the gateway's 64 KiB limit)."""
    size = random.randint(16, 512)
    return {"data": "".join(random.choices(string.ascii_letters + string.digits + " ", k=size))}


class GatewayUser(HttpUser):
    """One simulated client of the public API."""

    wait_time = between(WAIT_MIN, WAIT_MAX)

    @task(1)
    def health(self) -> None:
        self.client.get("/health", name="/health")

    @task(6)
    def message_by_id(self) -> None:
        message_id = random.randint(1, MAX_MESSAGE_ID)
        self.client.get(f"/message/{message_id}", name="/message/{id}")

    @task(3)
    def search(self) -> None:
        word = random.choice(SEARCH_WORDS)
        self.client.get("/message/search", params={"q": word}, name="/message/search")

    @task(2)
    def process(self) -> None:
        self.client.post("/process", json=_payload(), name="/process")
