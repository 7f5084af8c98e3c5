"""A private apt configuration for the lab builder (the machine's apt is never touched).

``$CACHE/apt/apt.conf`` points ``Dir::Etc::sourcelist``, ``Dir::State`` and ``Dir::Cache``
into the cache and disables ``sources.list.d`` (``Dir::Etc::sourceparts "-"``); every apt
command here runs with ``APT_CONFIG`` set to it. Sources are signed by Debian's archive
keyring (package debian-archive-keyring).
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = (
    "SUITES",
    "AptError",
    "candidate",
    "diagnose",
    "download",
    "ensure_config",
    "matching",
    "update",
    "versions",
)

_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
_DEBIAN = "http://deb.debian.org/debian"
_SECURITY = "http://deb.debian.org/debian-security"
#: (archive URL, suite) pairs of the private sources.list.
SUITES = (
    (_DEBIAN, "bookworm"),
    (_DEBIAN, "bookworm-updates"),
    (_SECURITY, "bookworm-security"),
    (_DEBIAN, "bullseye"),
    (_SECURITY, "bullseye-security"),
    (_DEBIAN, "trixie"),
    (_DEBIAN, "trixie-backports"),
)
_MAX_AGE_S = 24 * 3600


class AptError(RuntimeError):
    """An apt step failed; the message is one line."""


def ensure_config(d: Path) -> Path:
    """Write the private apt.conf + sources.list under ``d``; return the apt.conf path."""
    for sub in ("lists/partial", "cache/archives/partial", "state"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "status").touch()
    sources = "".join(f"deb [signed-by={_KEYRING}] {url} {suite} main\n" for url, suite in SUITES)
    (d / "sources.list").write_text(sources)
    conf = d / "apt.conf"
    conf.write_text(
        f'Dir::Etc::sourcelist "{d}/sources.list";\n'
        'Dir::Etc::sourceparts "-";\n'
        f'Dir::State "{d}/state";\n'
        f'Dir::State::Lists "{d}/lists";\n'
        f'Dir::State::status "{d}/status";\n'
        f'Dir::Cache "{d}/cache";\n'
        'APT::Architecture "amd64";\n'
        'APT::Architectures { "amd64"; };\n'
        'Acquire::Languages "none";\n'
        'Acquire::Retries "3";\n'
    )
    return conf


def _apt(d: Path, args: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APT_CONFIG": str(d / "apt.conf"), "LC_ALL": "C"}
    return subprocess.run(list(args), cwd=cwd, env=env, text=True, capture_output=True)


def update(d: Path, max_age_s: float = _MAX_AGE_S) -> None:
    """``apt-get update`` with the private config unless the lists are recent enough."""
    ensure_config(d)
    stamp = d / "lists" / ".updated"
    if stamp.exists() and time.time() - stamp.stat().st_mtime < max_age_s:
        return
    p = _apt(d, ["apt-get", "-q", "update"])
    if p.returncode != 0:
        tail = " | ".join(p.stderr.strip().splitlines()[-2:])
        raise AptError(f"apt-get update (private config {d}) failed: {tail}")
    stamp.touch()


def versions(d: Path, pkg: str) -> list[tuple[str, str]]:
    """(version, suite) pairs the archive lists for ``pkg`` (``apt-cache madison``)."""
    p = _apt(d, ["apt-cache", "madison", pkg])
    out = []
    for line in p.stdout.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) >= 3 and cols[0] == pkg:
            out.append((cols[1], cols[2].split()[1].split("/")[0]))
    return out


def candidate(d: Path, pkg: str, suite: str) -> str:
    """The version of ``pkg`` in ``suite`` (the first one ``madison`` lists)."""
    update(d)
    for ver, s in versions(d, pkg):
        if s == suite:
            return ver
    raise AptError(f"{pkg} is not in {suite} (private apt config {d})")


def matching(d: Path, glob: str) -> list[str]:
    """Package names matching ``glob`` that the lists know, newest (natural order) first."""
    update(d)
    rx = "^" + glob.split("*")[0].replace(".", "\\.").replace("+", "\\+")
    names = [
        ln.split(" - ")[0]
        for ln in _apt(d, ["apt-cache", "search", "--names-only", rx]).stdout.splitlines()
    ]

    def natural(s: str) -> list[object]:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]

    return sorted((n for n in names if fnmatch.fnmatchcase(n, glob)), key=natural, reverse=True)


def _newest(d: Path, glob: str) -> str:
    """``name=version`` of the newest package matching ``glob``, or ``(none)``."""
    names = matching(d, glob)
    if not names:
        return "(none)"
    vers = versions(d, names[0])
    return f"{names[0]}={vers[0][0]}" if vers else names[0]


def diagnose(d: Path, wanted: Sequence[tuple[str, str]], current_glob: str, kernel_id: str) -> str:
    """One line naming the first pinned package the archive lacks, or ``""``."""
    for pkg, ver in wanted:
        have = [v for v, _ in versions(d, pkg)]
        if ver not in have:
            cur = _newest(d, current_glob) if current_glob else (have[0] if have else "(none)")
            listed = ", ".join(have) or "nothing"
            return (
                f"kernel {kernel_id}: pinned {pkg}={ver} is not in the archive "
                f"(it lists {listed}); "
                f"current: {cur}; update vm-images/kernels.toml"
            )
    return ""


def download(
    d: Path,
    wanted: Sequence[tuple[str, str]],
    dest: Path,
    current_glob: str = "",
    kernel_id: str = "",
) -> dict[str, Path]:
    """``apt-get download NAME=VERSION ...`` into ``dest``; returns name -> .deb path.

    If a pinned version is gone, the lists are refreshed once; if it is still gone, raise
    :class:`AptError` naming the pinned and the current version.
    """
    update(d)
    args = ["apt-get", "-q", "download", *(f"{p}={v}" for p, v in wanted)]
    p = _apt(d, args, cwd=dest)
    if p.returncode != 0:
        update(d, max_age_s=0)
        p = _apt(d, args, cwd=dest)
    if p.returncode != 0:
        why = diagnose(d, wanted, current_glob, kernel_id)
        tail = " | ".join(p.stderr.strip().splitlines()[-2:])
        raise AptError(why or f"apt-get download failed: {tail}")
    files: dict[str, Path] = {}
    for pkg, _ in wanted:
        found = sorted(dest.glob(f"{pkg}_*.deb"))
        if len(found) != 1:
            raise AptError(f"apt-get download left {len(found)} files for {pkg} in {dest}")
        files[pkg] = found[0]
    return files
