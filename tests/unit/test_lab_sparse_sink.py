"""lab.qmp.sparse_sink: what a writer puts in the FIFO lands in a sparse file
byte for byte; a writer that never comes leaves nothing behind and does not hang. No QEMU."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from lab.qmp import sparse_sink

MiB = 1 << 20


def _write(fifo: Path, chunks: list[bytes]) -> None:
    with open(fifo, "wb") as f:
        for c in chunks:
            f.write(c)


def test_bytes_are_kept_and_zero_runs_take_no_space(tmp_path: Path) -> None:
    chunks = [b"ELF!" * 1000, bytes(64 * MiB), os.urandom(MiB), bytes(8 * MiB + 123)]
    out = tmp_path / "d.elf"
    with sparse_sink(out, timeout=60) as fifo:
        t = threading.Thread(target=_write, args=(fifo, chunks))
        t.start()
        t.join()
    data = out.read_bytes()
    assert data == b"".join(chunks)
    assert out.stat().st_blocks * 512 < 4 * MiB  # ~1 MiB of data + the header, not 73 MiB
    assert not fifo.exists()


def test_no_writer_and_an_error_leave_no_file(tmp_path: Path) -> None:
    out = tmp_path / "d.elf"
    with pytest.raises(RuntimeError, match="QMP said no"), sparse_sink(out, timeout=30):
        raise RuntimeError("QMP said no")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
