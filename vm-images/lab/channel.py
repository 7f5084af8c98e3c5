"""The guest command channel: the host side of the ttyS1 protocol.

The guest (vm-images/guest/shell-server.py) reads ``<n> <base64 script>`` lines and answers each
finished command with one uninterrupted frame::

    @@OUT-<n>@@ / base64 stdout / @@ERR-<n>@@ / base64 stderr / @@DONE-<n>-<rc>@@

plus the markers ``@@READY@@`` (server up) and ``@@JOB-RC-<rc>@@`` (batch job done). A reader
thread demultiplexes the frames, so several commands can run at once (:meth:`Channel.send` now,
:meth:`Channel.wait` later). Every received byte is also logged to a transcript file.
"""

from __future__ import annotations

import base64
import itertools
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ("Channel", "LabBootError", "LabError", "LabTimeout", "Result")

_FRAME = re.compile(
    rb"^@@(OUT|ERR)-(\d+)@@$|^@@DONE-(\d+)-(\d+)@@$|^@@(READY)@@$|^@@JOB-RC-(\d+)@@$"
)
_SEND_TIMEOUT_S = 120.0


class LabError(RuntimeError):
    """The lab harness failed (not the command under test)."""


class LabTimeout(LabError):
    """A boot, a command or a write to the guest exceeded its timeout."""


class LabBootError(LabError):
    """QEMU exited or the guest did not become ready; the message ends with the console tail."""


@dataclass(frozen=True, slots=True)
class Result:
    """What a guest command returned: decoded stdout/stderr, exit status, raw stdout bytes."""

    stdout: str
    stderr: str
    rc: int
    raw: bytes = b""

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def check(self) -> Result:
        """Return self, or raise LabError with the stderr tail if rc != 0."""
        if self.rc != 0:
            raise LabError(f"guest command failed (rc {self.rc}): {self.stderr.strip()[-400:]}")
        return self


class Channel:
    """Host end of the command channel on a connected stream socket.

    :param why: turns a message into a diagnostic (adds the VM name and console tail).
    :param batch: keep unframed lines (a batch job's output) for :meth:`batch_output`.
    """

    def __init__(
        self, sock: socket.socket, transcript: Path, why: Callable[[str], str], batch: bool
    ) -> None:
        self._sock, self._why, self._batch = sock, why, batch
        self._log = open(transcript, "wb")
        self._cv = threading.Condition()
        self._done: dict[int, Result] = {}
        self._events: list[str] = []
        self._batch_out = bytearray()
        self._closed = False
        self._seq = itertools.count(1)
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_loop, name="labvm-channel", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        buf, cur = b"", ""
        parts = {"OUT": bytearray(), "ERR": bytearray()}
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self._log.close()
                with self._cv:
                    self._events.append("EOF")
                    self._cv.notify_all()
                return
            self._log.write(chunk)
            self._log.flush()
            buf += chunk
            *lines, buf = buf.split(b"\n")
            with self._cv:
                for raw in lines:
                    cur = self._line(raw, cur, parts)
                self._cv.notify_all()

    def _line(self, raw: bytes, cur: str, parts: dict[str, bytearray]) -> str:
        """Handle one received line (lock held); returns the frame part being collected."""
        line = raw.rstrip(b"\r")
        m = _FRAME.match(line)
        if m is None:
            if cur:
                parts[cur] += line
            elif self._batch:
                self._batch_out += raw + b"\n"
            return cur
        if m.group(1):
            cur = m.group(1).decode()
            parts[cur] = bytearray()
            return cur
        if m.group(3):
            out, err = (base64.b64decode(bytes(parts[k])) for k in ("OUT", "ERR"))
            self._done[int(m.group(3))] = Result(
                out.decode(errors="replace"), err.decode(errors="replace"), int(m.group(4)), out
            )
        elif m.group(5):
            self._events.append("READY")
        else:
            self._events.append(f"JOB-RC-{int(m.group(6))}")
        return ""

    def wait_event(self, prefix: str, timeout: float, what: str) -> str:
        """Wait for a marker (``READY``, ``JOB-RC-``); LabBootError if the line closes first."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for ev in self._events:
                    if ev.startswith(prefix):
                        self._events.remove(ev)
                        return ev
                if "EOF" in self._events:
                    raise LabBootError(self._why(f"{what}: QEMU closed the serial line"))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LabTimeout(self._why(f"{what}: no {prefix} after {timeout:.0f}s"))
                self._cv.wait(min(left, 1.0))

    def send(self, cmd: str, prefix: bytes = b"") -> int:
        """Send ``cmd`` (a bash script) as the next command; returns its number."""
        if self._closed:
            raise LabError(self._why("the command channel is closed"))
        n = next(self._seq)
        line = prefix + f"{n} ".encode() + base64.b64encode(cmd.encode()) + b"\n"
        deadline = time.monotonic() + _SEND_TIMEOUT_S
        with self._send_lock:
            view = memoryview(line)
            while view:  # never block forever on a guest that stopped reading
                left = max(0.0, deadline - time.monotonic())
                if not select.select([], [self._sock], [], left)[1]:
                    raise LabTimeout(self._why(f"command {n}: the guest stopped reading ttyS1"))
                try:
                    view = view[self._sock.send(view, socket.MSG_DONTWAIT) :]
                except BlockingIOError:
                    continue
        return n

    def wait(self, n: int, timeout: float) -> Result:
        """The result of command ``n``; LabTimeout after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while n not in self._done:
                if "EOF" in self._events:
                    raise LabError(self._why(f"command {n}: QEMU closed the serial line"))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LabTimeout(self._why(f"command {n} still running after {timeout:.0f}s"))
                self._cv.wait(min(left, 1.0))
            return self._done.pop(n)

    def batch_output(self) -> bytes:
        """Unframed lines received so far (a batch job's merged stdout and stderr)."""
        with self._cv:
            return bytes(self._batch_out)

    def close(self) -> None:
        """Close the socket and let the reader thread finish."""
        self._closed = True
        self._sock.close()
        self._reader.join(timeout=5)
