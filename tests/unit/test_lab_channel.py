"""The host side of the lab's ttyS1 protocol, against a fake guest on a socketpair. No QEMU."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.channel import Channel, LabBootError, LabTimeout


def _frame(n: int, out: bytes, err: bytes, rc: int) -> bytes:
    return (
        f"@@OUT-{n}@@\n".encode()
        + base64.encodebytes(out)
        + f"@@ERR-{n}@@\n".encode()
        + base64.encodebytes(err)
        + f"@@DONE-{n}-{rc}@@\n".encode()
    )


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Channel, socket.socket]]:
    host, guest = socket.socketpair()
    chan = Channel(host, tmp_path / "ttyS1.log", lambda m: m, batch=True)
    yield chan, guest
    guest.close()
    chan.close()


def test_commands_are_sent_as_numbered_base64_lines(pair: tuple[Channel, socket.socket]) -> None:
    chan, guest = pair
    assert chan.send("echo 'a b'") == 1
    assert chan.send("true") == 2
    data = guest.recv(4096)
    assert (
        data
        == b"1 " + base64.b64encode(b"echo 'a b'") + b"\n2 " + base64.b64encode(b"true") + b"\n"
    )


def test_frames_out_of_order_and_split_across_reads(pair: tuple[Channel, socket.socket]) -> None:
    chan, guest = pair
    big = bytes(range(256)) * 1000
    wire = _frame(2, b"second\n", b"", 0) + b"noise line\n" + _frame(1, big, b"oops\n", 3)
    for i in range(0, len(wire), 777):  # arbitrary chunking, like a serial line
        guest.sendall(wire[i : i + 777])
    r1 = chan.wait(1, timeout=5)
    assert (r1.raw, r1.stderr, r1.rc) == (big, "oops\n", 3)
    r2 = chan.wait(2, timeout=5)
    assert (r2.stdout, r2.stderr, r2.rc) == ("second\n", "", 0)
    assert chan.batch_output() == b"noise line\n"
    assert (Path(chan._log.name)).read_bytes() == wire


def test_markers_and_timeouts(pair: tuple[Channel, socket.socket]) -> None:
    chan, guest = pair
    guest.sendall(b"@@READY@@\r\n@@JOB-RC-7@@\n")
    assert chan.wait_event("READY", 5, "boot") == "READY"
    assert chan.wait_event("JOB-RC-", 5, "job") == "JOB-RC-7"
    with pytest.raises(LabTimeout):
        chan.wait(99, timeout=0.2)
    guest.close()
    with pytest.raises(LabBootError):
        chan.wait_event("READY", 5, "boot")
