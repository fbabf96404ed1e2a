"""stackctl.procfs against real processes: what the twin, the benchmark and the profiler read."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress

import pytest

from stackctl import procfs

Start = Callable[[str], subprocess.Popen[str]]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start ``python -c <code>`` in a session of its own; killed (group and all) at the end."""
    started: list[subprocess.Popen[str]] = []

    def run(code: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        started.append(proc)
        return proc

    yield run
    for proc in started:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def _ready(proc: subprocess.Popen[str]) -> str:
    """The line the child prints once it is set up."""
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


# A command name with a space and both parentheses: /proc/<pid>/stat must be cut at the last ")".
_ODD_NAME = "import pathlib; pathlib.Path('/proc/self/comm').write_text('x) y (z')\n"


def _gone_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_start_ticks_identify_a_process_and_are_none_once_it_is_gone(start: Start) -> None:
    proc = start(_ODD_NAME + "print('ready', flush=True); import time; time.sleep(60)")
    assert _ready(proc) == "ready"
    ticks = procfs.start_ticks(proc.pid)
    assert ticks is not None
    own = procfs.start_ticks(os.getpid())
    assert own is not None
    assert ticks >= own  # started after this test process
    assert procfs.start_ticks(proc.pid) == ticks  # the same on every reading
    assert procfs.start_ticks(_gone_pid()) is None


def test_a_zombie_is_not_running_and_a_reaped_process_is_gone(start: Start) -> None:
    proc = start(_ODD_NAME + "print('ready', flush=True); import time; time.sleep(60)")
    assert _ready(proc) == "ready"
    assert procfs.running(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while procfs.running(proc.pid):  # exited, not yet reaped: a zombie
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert procfs.start_ticks(proc.pid) is not None  # the zombie is still there
    assert procfs.rss_kb(proc.pid) is None  # with no memory
    proc.wait()
    assert not procfs.running(proc.pid)
    assert procfs.start_ticks(proc.pid) is None


_FORKS = """
import subprocess, threading, time
main = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
from_thread = []
def thread():
    from_thread.append(subprocess.Popen(["sleep", "60"]))
    time.sleep(60)  # its children stay listed under this thread while it lives
threading.Thread(target=thread, daemon=True).start()
while not from_thread:
    time.sleep(0.01)
print(" ".join(str(p.pid) for p in [*main, *from_thread]), flush=True)
time.sleep(60)
"""


def test_children_lists_the_main_threads_children_first_then_other_threads(start: Start) -> None:
    proc = start(_FORKS)
    pids = [int(pid) for pid in _ready(proc).split()]
    assert procfs.children(proc.pid) == pids
    assert procfs.children(pids[0]) == []  # sleep has none
    with pytest.raises(FileNotFoundError):
        procfs.children(_gone_pid())


def test_cpu_ticks_count_the_cpu_a_process_used(start: Start) -> None:
    busy = start(
        _ODD_NAME + "import time\n"
        "end = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass\n"
        "print('done', flush=True); time.sleep(60)"
    )
    idle = start("print('ready', flush=True); import time; time.sleep(60)")
    assert _ready(busy) == "done"
    assert _ready(idle) == "ready"
    busy_ticks = procfs.cpu_ticks(busy.pid)
    assert busy_ticks is not None
    assert busy_ticks >= 0.25 * procfs.CLOCK_TICKS_PER_SECOND
    gone = _gone_pid()
    assert procfs.cpu_ticks(gone) is None
    # Summed over processes, in seconds; a gone one counts nothing.
    both = procfs.cpu_seconds([busy.pid, idle.pid, gone])
    alone = procfs.cpu_seconds([busy.pid])
    assert both >= alone >= 0.25


def test_rss_kb_is_the_resident_memory(start: Start) -> None:
    idle = start("print('ready', flush=True); import time; time.sleep(60)")
    # 64 MiB written (not only allocated), so every page is resident.
    big = start("data = b'x' * (64 << 20); print('ready', flush=True); import time; time.sleep(60)")
    assert _ready(idle) == _ready(big) == "ready"
    idle_kb, big_kb = procfs.rss_kb(idle.pid), procfs.rss_kb(big.pid)
    assert idle_kb is not None
    assert big_kb is not None
    assert big_kb - idle_kb > 60 * 1024
    assert procfs.rss_kb(_gone_pid()) is None


def test_the_machine_has_a_size() -> None:
    assert procfs.memory_total_kb() > 100 * 1024
    model = procfs.cpu_model()
    assert model is None or model.strip() == model != ""
