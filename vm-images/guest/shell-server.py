#!/usr/bin/python3
"""Command server on ttyS1 for the lab guest (run by init.sh in interactive mode).

Host -> guest: one line per command, ``<n> <base64 of a bash script>``.
Guest -> host: one frame per finished command; frames never interleave:
``@@OUT-<n>@@`` / base64 stdout / ``@@ERR-<n>@@`` / base64 stderr / ``@@DONE-<n>-<rc>@@``.
Commands run concurrently (cwd /root, stdin /dev/null). Python reads the tty in blocks, so
large inputs (put()) are not slowed down by a byte-per-syscall shell ``read``.
"""

import base64
import os
import subprocess
import sys
import tempfile
import termios
import threading
import tty

TTY = sys.argv[1] if len(sys.argv) > 1 else "/dev/ttyS1"
lock = threading.Lock()


def send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def run_one(fd: int, n: str, b64: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix=f"cmd-{n}-", dir="/run/lab") as d:
        out, err = os.path.join(d, "out"), os.path.join(d, "err")
        try:
            script = base64.b64decode(b64, validate=False)
        except ValueError as e:
            rc, o, e_ = 254, b"", f"lab-shell: bad base64: {e}\n".encode()
        else:
            with open(os.path.join(d, "cmd.sh"), "wb") as f:
                f.write(script)
            with open(out, "wb") as fo, open(err, "wb") as fe:
                rc = subprocess.call(
                    ["bash", os.path.join(d, "cmd.sh")],
                    stdin=subprocess.DEVNULL,
                    stdout=fo,
                    stderr=fe,
                    cwd="/root",
                )
            with open(out, "rb") as f:
                o = f.read()
            with open(err, "rb") as f:
                e_ = f.read()
        rc = rc if rc >= 0 else 128 - rc
        frame = b"".join(
            [
                f"@@OUT-{n}@@\n".encode(),
                base64.encodebytes(o),
                f"@@ERR-{n}@@\n".encode(),
                base64.encodebytes(e_),
                f"@@DONE-{n}-{rc}@@\n".encode(),
            ]
        )
        with lock:
            send(fd, frame)


def main() -> None:
    fd = os.open(TTY, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~(termios.ECHO | termios.ECHONL)
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    os.makedirs("/run/lab", exist_ok=True)
    with lock:
        send(fd, b"@@READY@@\n")
    buf = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            n, _, b64 = line.strip(b"\r").partition(b" ")
            if n.isdigit():
                threading.Thread(target=run_one, args=(fd, n.decode(), b64), daemon=True).start()


if __name__ == "__main__":
    main()
