"""What stackctl reads about a process from /proc (Linux): the one place that parses it.

``start_ticks`` tells a pid from a recycled one (the twin records it with every pid it
starts), ``children`` finds a gunicorn master's workers, ``cpu_ticks``/``cpu_seconds`` and
``rss_kb`` are the benchmark's and the profiler's accounting; ``cpu_model`` and
``memory_total_kb`` describe the machine in its results. A process that is gone reads as None
(or 0 CPU); ``children`` of a gone process raises, as there is nothing to list.
"""

import os
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")

# Fields of /proc/<pid>/stat, counted from 1 as proc(5) does.
_STATE, _UTIME, _STIME, _STARTTIME = 3, 14, 15, 22


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (``(comm)`` may hold spaces and
    parentheses, so it is cut at the last ``)``): index 0 is field 3, ``state``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _field(fields: list[str], number: int) -> str:
    return fields[number - _STATE]


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot; None if there is no such pid."""
    fields = _stat(pid)
    return None if fields is None else int(_field(fields, _STARTTIME))


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for whoever adopted it to reap it."""
    fields = _stat(pid)
    return fields is not None and _field(fields, _STATE) != "Z"


def children(pid: int) -> list[int]:
    """The pids of the process's children, those its main thread started first (a gunicorn
    master forks its workers there), then any other thread's. FileNotFoundError if ``pid``
    does not exist."""
    tids = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    found: list[int] = []
    for tid in sorted(tids, key=lambda tid: (tid != pid, tid)):
        with suppress(OSError):  # a thread that ended meanwhile
            listed = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            found += [int(child) for child in listed.split()]
    return found


def cpu_ticks(pid: int) -> int | None:
    """User + system CPU time the process has used, in clock ticks (its threads included,
    its children not); None if it is gone."""
    fields = _stat(pid)
    return None if fields is None else int(_field(fields, _UTIME)) + int(_field(fields, _STIME))


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these processes together; a gone one counts 0."""
    return sum(cpu_ticks(pid) or 0 for pid in pids) / CLOCK_TICKS_PER_SECOND


def rss_kb(pid: int) -> int | None:
    """Resident memory (VmRSS, kB); None if the process is gone or has none (a zombie)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def cpu_model() -> str | None:
    """The first ``model name`` of /proc/cpuinfo (None where it has none, e.g. some ARM)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def memory_total_kb() -> int:
    """MemTotal of /proc/meminfo."""
    fields = Path("/proc/meminfo").read_text().split()
    return int(fields[fields.index("MemTotal:") + 1])
