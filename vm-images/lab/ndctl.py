"""The lab's ndctl command lines, one function per recipe (pure; strings for a guest shell).

Stdlib only and free of other lab imports: the guest side of the churn (``python3 -m
lab.churn``) imports it from the project disk next to the host's scenarios, scale layouts and
tests.
"""

from __future__ import annotations

__all__ = ("MODES", "create_namespace", "destroy_namespace", "reconfigure", "reset_labels")

MiB = 1 << 20
MODES = ("fsdax", "devdax")
_MAPS = ("dev", "mem")


def reset_labels() -> str:
    """Write fresh labels on every DIMM, with its region disabled around it.

    A new NVDIMM is one label-less raw namespace; several namespaces in one region need labels
    (lab-notes §5.1).
    """
    return "ndctl disable-region all && ndctl init-labels -f all && ndctl enable-region all"


def _mode_map(mode: str, map_: str) -> str:
    if mode not in MODES or map_ not in _MAPS:
        raise ValueError(f"mode {mode!r} / map {map_!r}: want one of {MODES} / {_MAPS}")
    return f"-m {mode} --map={map_}"


def create_namespace(
    mode: str, map_: str, size: int, name: str | None = None, region: str = "region0"
) -> str:
    """``ndctl create-namespace`` of ``size`` bytes (raw, a whole number of MiB) in ``region``.

    Back-to-back creates in a freshly labelled region are contiguous (the declared layouts of
    lab.scenarios rely on it).
    """
    if size <= 0 or size % MiB:
        raise ValueError(f"namespace size {size:#x} is not a positive whole number of MiB")
    cmd = f"ndctl create-namespace -r {region} {_mode_map(mode, map_)} -s {size // MiB}M"
    return f"{cmd} -n {name}" if name else cmd


def reconfigure(dev: str, mode: str, map_: str) -> str:
    """Turn the existing namespace ``dev`` (e.g. a legacy e820 one) into ``mode``/``map_``."""
    return f"ndctl create-namespace -f -e {dev} {_mode_map(mode, map_)}"


def destroy_namespace(dev: str = "all") -> str:
    """Destroy namespace ``dev`` (``all``: every one), forced even when it is enabled."""
    return f"ndctl destroy-namespace -f {dev}"
