"""Kernels' control-block directories left by killed kernels are reaped; live ones never."""

import mmap
import os
import struct
import subprocess
import sys

from roar_nb.capture import events as ev


def _block(d, pid):
    d.mkdir()
    p = d / "control"
    p.write_bytes(b"ROARCTL1" + struct.pack("<II", 1, 4096) + bytes(16) + struct.pack("<I", pid)
                  + bytes(4096 - 36))
    return p


def test_block_of_a_dead_host_is_reaped_and_a_live_one_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    _block(tmp_path / "roar-kernel-dead", int(dead))
    live = _block(tmp_path / "roar-kernel-live", os.getpid())
    # Our pid but not mapped: a reused pid, so the block is stale too.
    _block(tmp_path / "roar-kernel-reused", os.getpid())
    other = tmp_path / "roar-kernel-other"
    _block(other, int(dead))
    (other / "something.ev").write_bytes(b"")  # not only a block: never touched
    with open(live, "r+b") as f, mmap.mmap(f.fileno(), 4096):
        ev.reap_stale(str(tmp_path), "roar-kernel-")
        left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["roar-kernel-live", "roar-kernel-other"]
