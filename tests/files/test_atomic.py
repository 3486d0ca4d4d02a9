"""Atomic writes leave whole files only; the sweep removes only dead writers' temporaries."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from runner.files.atomic import is_temporary, sweep_temporaries, temporary_name, write_atomic


def test_atomic_write_leaves_the_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "batch" / "1-0.png"
    digest = write_atomic(target, b"abc")
    assert target.read_bytes() == b"abc"
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert [p.name for p in target.parent.iterdir()] == ["1-0.png"]


def test_a_temporary_name_carries_the_writers_pid() -> None:
    name = temporary_name("1-0.png")
    assert is_temporary(name)
    assert not is_temporary("1-0.png")
    assert name == f".tmp-{os.getpid()}-1-0.png"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _age(path: Path, seconds: float) -> None:
    os.utime(path, (time.time() - seconds, time.time() - seconds))


def test_sweep_removes_temporaries_a_killed_run_left(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    stale = tmp_path / "b" / temporary_name("1-0.png", _dead_pid())
    stale.write_bytes(b"half")
    _age(stale, 600)
    (tmp_path / "b" / "2-0.png").write_bytes(b"whole")
    assert sweep_temporaries(tmp_path) == 1
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["2-0.png"]


def test_sweep_leaves_a_live_writers_temporary_alone(tmp_path: Path) -> None:
    """Another worker sharing the directory may be writing that file right now."""
    mine = tmp_path / f".tmp-{os.getpid()}-3-0.png"
    mine.write_bytes(b"being written")
    _age(mine, 600)
    fresh = tmp_path / f".tmp-{_dead_pid()}-4-0.png"
    fresh.write_bytes(b"just written")
    assert sweep_temporaries(tmp_path) == 0
    assert mine.exists()
    assert fresh.exists()
