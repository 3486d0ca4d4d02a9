"""Atomic file writes, and sweeping the temporaries a killed process left behind.

A file is written under a temporary name in its final folder, then renamed into place, so a
reader (or a run resumed after a crash) sees either no file or the whole file. The temporary
name carries the writer's pid: ``.tmp-<pid>-<name>``.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from runner.files.procs import pid_alive

TMP_PREFIX = ".tmp-"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def is_temporary(name: str) -> bool:
    """Whether a file name is a temporary of an atomic write (finished or not)."""
    return name.startswith(TMP_PREFIX)


def temporary_name(name: str, pid: int | None = None) -> str:
    """The temporary name this process (or ``pid``) writes ``name`` under."""
    return f"{TMP_PREFIX}{os.getpid() if pid is None else pid}-{name}"


def write_atomic(path: str | Path, data: bytes, *, fsync: bool = False) -> str:
    """Write ``data`` to ``path`` via a temporary file and a rename; return its sha256.

    A killed process leaves either no file or the whole file, never a partial one; stray
    temporaries are found by :func:`sweep_temporaries`. ``fsync`` also makes the bytes
    durable against power loss before the rename (``IMAGERUN_FSYNC=1``); it is off by default
    because the database itself commits with ``synchronous=NORMAL``, which is crash-safe but
    not power-loss durable either, and a per-file fsync costs milliseconds.
    """
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, temporary_name(name))
    try:
        fd = os.open(tmp, _CREATE, 0o666)
    except FileNotFoundError:  # the batch's first image (or its folder was removed)
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, _CREATE, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def sweep_temporaries(root: Path, *, older_than: float = 60.0) -> int:
    """Remove temporary files a killed run left under ``root``; returns how many.

    Another live worker may be writing into the same directory, so only temporaries whose
    writer (the pid in the name) is gone from this machine *and* that have not been touched
    for ``older_than`` seconds are removed.
    """
    if not root.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - older_than
    for tmp in root.rglob(f"{TMP_PREFIX}*"):
        pid = tmp.name.removeprefix(TMP_PREFIX).split("-", 1)[0]
        try:
            stale = tmp.stat().st_mtime < cutoff and not (pid.isdigit() and pid_alive(int(pid)))
        except FileNotFoundError:
            continue
        if stale:
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed
