"""The kernel matrix: vm-images/kernels.toml loaded into frozen dataclasses.

The matrix is data, not code: each Debian kernel of the lab is one ``[[kernel]]`` table
naming the packages to fetch and where the interesting files sit inside them. This module
only parses and checks it; :mod:`lab.images` acts on it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

__all__ = (
    "KERNELS_TOML",
    "Kernel",
    "Matrix",
    "MatrixError",
    "load_matrix",
    "parse_matrix",
)

#: The matrix file shipped with the project.
KERNELS_TOML = Path(__file__).resolve().parents[2] / "vm-images" / "kernels.toml"

_COMPRESSIONS = frozenset({"none", "xz"})
_LIST_FIELDS = ("image", "headers", "kbuild", "initramfs_modules")
_STR_FIELDS = (
    "id",
    "suite",
    "kver",
    "version",
    "dbg",
    "dbg_vmlinux",
    "vmlinuz",
    "modules_dir",
    "module_compression",
    "current_glob",
)


class MatrixError(ValueError):
    """kernels.toml is malformed or inconsistent."""


@dataclass(frozen=True, slots=True)
class Kernel:
    """One Debian cloud kernel of the lab (one ``[[kernel]]`` table)."""

    id: str
    suite: str
    kver: str
    version: str
    image: tuple[str, ...]
    dbg: str
    dbg_vmlinux: str
    headers: tuple[str, ...]
    kbuild: tuple[str, ...]
    vmlinuz: str
    modules_dir: str
    module_compression: str
    initramfs_modules: tuple[str, ...]
    current_glob: str

    @property
    def packages(self) -> tuple[str, ...]:
        """Every package fetched for this kernel, all at :attr:`version`."""
        return (*self.image, self.dbg, *self.headers, *self.kbuild)

    @property
    def module_suffix(self) -> str:
        """File suffix of the modules in the unpacked tree (``.ko`` or ``.ko.xz``)."""
        return ".ko" if self.module_compression == "none" else ".ko.xz"

    def key_fields(self) -> dict[str, Any]:
        """The fields that define the build (used for cache keys)."""
        return {name: getattr(self, name) for name in self.__slots__}

    @property
    def abi(self) -> str:
        """The ABI part of :attr:`kver` shared by the package names (``6.1.0-56``)."""
        return self.kver.removesuffix("-cloud-amd64")

    def rebased(self, kver: str, version: str) -> Kernel:
        """The same series at another ABI: every name and path re-spelt for ``kver``.

        Used when a pin has left the archive (Debian's security suite keeps only the newest
        ABI): the builder follows the series instead of failing. Raises :class:`MatrixError`
        if the result is inconsistent (see :func:`_check`).
        """
        old, new = self.abi, kver.removesuffix("-cloud-amd64")

        def re_spell(v: str) -> str:
            return v.replace(old, new)

        fields: dict[str, Any] = {}
        for name in self.__slots__:
            v = getattr(self, name)
            if name in ("id", "suite", "current_glob", "module_compression", "initramfs_modules"):
                fields[name] = v
            elif isinstance(v, tuple):
                fields[name] = tuple(re_spell(x) for x in v)
            else:
                fields[name] = re_spell(v)
        fields["kver"], fields["version"] = kver, version
        k = Kernel(**fields)
        _check(k)
        return k

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Kernel:
        """The inverse of :meth:`key_fields` (lists become tuples), checked."""
        try:
            k = cls(**{f: tuple(v) if isinstance(v, list) else v for f, v in fields.items()})
        except TypeError as e:
            raise MatrixError(f"bad kernel record: {e}") from e
        _check(k)
        return k


@dataclass(frozen=True, slots=True)
class Matrix:
    """The whole matrix: a schema number (bumping it rebuilds all) and the kernels."""

    schema: int
    kernels: tuple[Kernel, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(k.id for k in self.kernels)

    def get(self, kernel_id: str) -> Kernel:
        for k in self.kernels:
            if k.id == kernel_id:
                return k
        raise MatrixError(f"unknown kernel id {kernel_id!r}; the matrix has {', '.join(self.ids)}")


def _kernel(table: dict[str, Any]) -> Kernel:
    missing = [f for f in (*_STR_FIELDS, *_LIST_FIELDS) if f not in table]
    if missing:
        raise MatrixError(f"kernel {table.get('id', '?')}: missing fields {', '.join(missing)}")
    unknown = sorted(set(table) - set(_STR_FIELDS) - set(_LIST_FIELDS))
    if unknown:
        raise MatrixError(f"kernel {table['id']}: unknown fields {', '.join(unknown)}")
    for f in _STR_FIELDS:
        if not isinstance(table[f], str) or not table[f]:
            raise MatrixError(f"kernel {table['id']}: {f} must be a non-empty string")
    for f in _LIST_FIELDS:
        if not isinstance(table[f], list) or not all(isinstance(x, str) for x in table[f]):
            raise MatrixError(f"kernel {table['id']}: {f} must be a list of strings")
    k = Kernel(**{f: table[f] for f in _STR_FIELDS}, **{f: tuple(table[f]) for f in _LIST_FIELDS})
    _check(k)
    return k


def _check(k: Kernel) -> None:
    """Cross-field consistency: every path and package must name this kernel's kver."""
    if k.module_compression not in _COMPRESSIONS:
        raise MatrixError(
            f"kernel {k.id}: module_compression must be one of {sorted(_COMPRESSIONS)}"
        )
    if not k.image or not k.headers:
        raise MatrixError(f"kernel {k.id}: image and headers must not be empty")
    for f in ("dbg_vmlinux", "vmlinuz", "modules_dir", "dbg"):
        if k.kver not in getattr(k, f):
            raise MatrixError(f"kernel {k.id}: {f} does not mention kver {k.kver}")
    if not k.modules_dir.endswith(f"modules/{k.kver}"):
        raise MatrixError(f"kernel {k.id}: modules_dir must end in modules/{k.kver}")
    if not k.dbg.endswith("-dbg"):
        raise MatrixError(f"kernel {k.id}: dbg package {k.dbg} is not a -dbg package")
    if not k.kver.startswith(k.id + ".") and not k.kver.startswith(k.id + "-"):
        raise MatrixError(f"kernel {k.id}: kver {k.kver} is not of series {k.id}")
    if not k.version.startswith(k.id + "."):
        raise MatrixError(f"kernel {k.id}: package version {k.version} is not of series {k.id}")
    for p in k.packages:
        if p.startswith("/") or " " in p:
            raise MatrixError(f"kernel {k.id}: bad package name {p!r}")
    if len(set(k.packages)) != len(k.packages):
        raise MatrixError(f"kernel {k.id}: a package is listed twice")
    for p in (*k.image, *k.headers):
        if k.abi not in p:
            raise MatrixError(f"kernel {k.id}: package {p} does not belong to {k.kver}")


def parse_matrix(text: str) -> Matrix:
    """Parse the text of a kernels.toml."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MatrixError(f"kernels.toml: {e}") from e
    schema = doc.get("schema")
    if not isinstance(schema, int):
        raise MatrixError("kernels.toml: top-level 'schema' (an integer) is missing")
    tables = doc.get("kernel")
    if not isinstance(tables, list) or not tables:
        raise MatrixError("kernels.toml: no [[kernel]] tables")
    kernels = tuple(_kernel(t) for t in tables)
    ids = [k.id for k in kernels]
    if len(set(ids)) != len(ids):
        raise MatrixError(f"kernels.toml: duplicate kernel ids in {ids}")
    if len({k.kver for k in kernels}) != len(kernels):
        raise MatrixError("kernels.toml: two kernels share a kver")
    return Matrix(schema=schema, kernels=kernels)


@cache
def load_matrix(path: Path = KERNELS_TOML) -> Matrix:
    """Load and check the matrix file (cached per path)."""
    return parse_matrix(path.read_text())
