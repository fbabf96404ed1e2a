"""Test stacks choose their ports: never one another's, never a client's."""

from stackctl.native import CORE_PORTS
from stackctl.ports import offsets


def test_stacks_at_different_offsets_share_no_port() -> None:
    ports = [port for _, port in CORE_PORTS]
    candidates = offsets(ports)
    assert len(candidates) >= 4  # room for several test runs at once
    taken = [{port + offset for port in ports} for offset in [0, *candidates]]
    for i, one in enumerate(taken):
        for other in taken[i + 1 :]:
            assert not one & other
    assert max(port + candidates[-1] for port in ports) < 32_768  # below the ephemeral range
