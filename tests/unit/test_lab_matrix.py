"""The lab's kernel matrix (vm-images/kernels.toml) parses and is consistent. No network."""

from __future__ import annotations

import re

import pytest

from subsecinspect.lab import images
from subsecinspect.lab.matrix import KERNELS_TOML, MatrixError, load_matrix, parse_matrix


def test_matrix_has_the_four_kernels() -> None:
    assert load_matrix().ids == ("5.10", "6.1", "6.12", "7.2")


@pytest.mark.parametrize("kid", ["5.10", "6.1", "6.12", "7.2"])
def test_kernel_entry_is_consistent(kid: str) -> None:
    k = load_matrix().get(kid)
    assert k.kver.endswith("-cloud-amd64")
    assert k.dbg == f"linux-image-{k.kver}-dbg"
    assert k.dbg_vmlinux.startswith("usr/lib/debug/") and k.dbg_vmlinux.endswith(
        ("vmlinux", k.kver)
    )
    assert f"linux-headers-{k.kver}" in k.headers
    assert any(h.endswith("-common") for h in k.headers)
    assert k.modules_dir.endswith(f"/modules/{k.kver}")
    assert k.vmlinuz.endswith(f"vmlinuz-{k.kver}") or k.vmlinuz == f"{k.modules_dir}/vmlinuz"
    assert "virtio_blk" in k.initramfs_modules
    assert re.fullmatch(r"[0-9][0-9a-z.+~:-]*", k.version)
    assert k.module_suffix == (".ko" if k.module_compression == "none" else ".ko.xz")


def test_every_line_of_a_kernel_table_is_commented() -> None:
    # Each [[kernel]] table carries at least one comment saying why it is pinned like this.
    blocks = re.split(r"^\[\[kernel\]\]$", KERNELS_TOML.read_text(), flags=re.M)[1:]
    assert len(blocks) == 4
    assert all("#" in b for b in blocks)


def test_paths_are_under_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("SUBSECINSPECT_LAB_CACHE", str(tmp_path))
    p = images.paths("7.2")
    assert p.kver == "7.2.12+deb13-cloud-amd64"
    assert str(p.vmlinux).startswith(str(tmp_path))
    assert p.rootfs_img == images.cache_dir() / "rootfs" / "rootfs.img"
    assert set(p.missing()) == {p.vmlinuz, p.initramfs, p.vmlinux, p.kernel_img, p.rootfs_img}


def _one(**over: object) -> str:
    fields = {
        "id": '"6.1"',
        "suite": '"bookworm"',
        "kver": '"6.1.0-1-cloud-amd64"',
        "version": '"6.1.1-1"',
        "image": '["linux-image-6.1.0-1-cloud-amd64"]',
        "dbg": '"linux-image-6.1.0-1-cloud-amd64-dbg"',
        "dbg_vmlinux": '"usr/lib/debug/boot/vmlinux-6.1.0-1-cloud-amd64"',
        "headers": '["linux-headers-6.1.0-1-cloud-amd64", "linux-headers-6.1.0-1-common"]',
        "kbuild": "[]",
        "vmlinuz": '"boot/vmlinuz-6.1.0-1-cloud-amd64"',
        "modules_dir": '"lib/modules/6.1.0-1-cloud-amd64"',
        "module_compression": '"none"',
        "initramfs_modules": '["virtio_blk"]',
        "current_glob": '"linux-image-6.1.0-*-cloud-amd64-dbg"',
    }
    fields.update({k: str(v) for k, v in over.items()})
    body = "\n".join(f"{k} = {v}" for k, v in fields.items() if v != "DROP")
    return f"schema = 1\n[[kernel]]\n{body}\n"


def test_minimal_entry_parses() -> None:
    m = parse_matrix(_one())
    assert m.get("6.1").kver == "6.1.0-1-cloud-amd64"


@pytest.mark.parametrize(
    ("over", "msg"),
    [
        ({"module_compression": '"zstd"'}, "module_compression"),
        ({"dbg_vmlinux": '"usr/lib/debug/boot/vmlinux-6.1.0-2-cloud-amd64"'}, "dbg_vmlinux"),
        ({"version": '"6.2.1-1"'}, "package version"),
        ({"current_glob": "DROP"}, "missing fields current_glob"),
        ({"headers": '["linux-headers-6.1.0-2-cloud-amd64"]'}, "does not belong"),
        ({"bogus": '"x"'}, "unknown fields bogus"),
    ],
)
def test_inconsistent_entries_are_rejected(over: dict[str, str], msg: str) -> None:
    with pytest.raises(MatrixError, match=msg):
        parse_matrix(_one(**over))


def test_duplicate_ids_are_rejected() -> None:
    text = _one() + _one().split("\n", 1)[1]
    with pytest.raises(MatrixError, match="duplicate"):
        parse_matrix(text)
