"""The lab's kernel matrix (vm-images/kernels.toml) parses and is consistent. No network."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lab import images
from lab.matrix import KERNELS_TOML, Kernel, MatrixError, load_matrix, parse_matrix


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


def test_rebased_respells_every_name_of_the_abi() -> None:
    k = load_matrix().get("6.12")
    r = k.rebased("6.12.200+deb12-cloud-amd64", "6.12.200-1~deb12u1")
    assert r.kver == "6.12.200+deb12-cloud-amd64" and r.version == "6.12.200-1~deb12u1"
    assert r.dbg == "linux-image-6.12.200+deb12-cloud-amd64-dbg"
    assert r.kbuild == ("linux-kbuild-6.12.200+deb12",)
    assert all("6.12.117" not in p for p in (*r.packages, r.dbg_vmlinux, r.modules_dir))
    assert (r.id, r.suite, r.current_glob) == (k.id, k.suite, k.current_glob)
    with pytest.raises(MatrixError, match="not of series"):
        k.rebased("7.0.1+deb12-cloud-amd64", "7.0.1-1")


class _Archive:
    """A fake of apt.versions/apt.matching: package -> [(version, suite)]."""

    def __init__(self, listing: dict[str, list[tuple[str, str]]]) -> None:
        self.listing = listing

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(images.apt, "update", lambda d, max_age_s=0: None)
        monkeypatch.setattr(images.apt, "versions", lambda d, p: self.listing.get(p, []))
        monkeypatch.setattr(
            images.apt,
            "matching",
            lambda d, glob: sorted((n for n in self.listing if n.endswith("-dbg")), reverse=True),
        )


def _listing(k: Kernel, suite: str) -> dict[str, list[tuple[str, str]]]:
    return {p: [(k.version, suite)] for p in k.packages}


@pytest.fixture
def k61(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Kernel:
    """The matrix's 6.1 entry, with the lab cache in tmp_path."""
    monkeypatch.setenv("SUBSECINSPECT_LAB_CACHE", str(tmp_path))
    return load_matrix().get("6.1")


def test_follow_keeps_a_complete_pin(monkeypatch: pytest.MonkeyPatch, k61: Kernel) -> None:
    k = k61
    _Archive(_listing(k, k.suite)).install(monkeypatch)
    assert images._follow(k) is k


def test_follow_takes_the_newest_complete_abi(
    monkeypatch: pytest.MonkeyPatch, k61: Kernel
) -> None:
    # The pinned kbuild (a version-less name) is gone; -57 is complete in the suite, -58 is
    # only listed in another suite, -59 lacks its headers: -57 is built.
    k = k61
    listing = _listing(k, k.suite)
    del listing["linux-kbuild-6.1"]
    n57 = k.rebased("6.1.0-57-cloud-amd64", "6.1.200-1")
    n58 = k.rebased("6.1.0-58-cloud-amd64", "6.1.201-1")
    n59 = k.rebased("6.1.0-59-cloud-amd64", "6.1.202-1")
    listing |= _listing(n57, k.suite) | _listing(n58, "bullseye-backports")
    listing |= {p: v for p, v in _listing(n59, k.suite).items() if "headers" not in p}
    listing["linux-kbuild-6.1"] = [(v, k.suite) for v in ("6.1.202-1", "6.1.200-1")]
    _Archive(listing).install(monkeypatch)
    assert images._follow(k) == n57


def test_follow_without_a_complete_abi_names_the_pin(
    monkeypatch: pytest.MonkeyPatch, k61: Kernel
) -> None:
    k = k61
    listing = _listing(k, k.suite)
    del listing[k.dbg]
    _Archive(listing).install(monkeypatch)
    monkeypatch.setattr(images.apt, "_newest", lambda d, glob: "(none)")
    with pytest.raises(images.apt.AptError, match=f"pinned {k.dbg}={k.version} is not in"):
        images._follow(k)


def test_built_kernel_is_what_the_stamp_records(k61: Kernel, tmp_path: Path) -> None:
    k = k61
    assert images.built_kernel("6.1") == k  # nothing built yet
    d = tmp_path / "kernels" / "6.1"
    d.mkdir(parents=True)
    followed = k.rebased("6.1.0-99-cloud-amd64", "6.1.300-1")
    doc = {"key": "x", "pinned": k.key_fields(), "kernel": followed.key_fields()}
    (d / "stamp.json").write_text(json.dumps(doc))
    assert images.built_kernel("6.1") == followed
    assert images.paths("6.1").kver == "6.1.0-99-cloud-amd64"
    doc["pinned"] = {**k.key_fields(), "version": "6.1.1-1"}  # the matrix moved since
    (d / "stamp.json").write_text(json.dumps(doc))
    assert images.built_kernel("6.1") == k
