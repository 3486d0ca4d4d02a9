"""Write-if-changed file operations: what makes a re-export idempotent and incremental.

Every file an export produces is written to a temporary file beside its target and then
either renamed over it or, when the target already holds the same bytes, dropped. An
unchanged export therefore rewrites nothing (mtimes stay put), and a crash never leaves a
half-written file under a final name.
"""

from __future__ import annotations

import filecmp
import hashlib
import io
import os
import secrets
import shutil
from pathlib import Path
from typing import IO

from runner.files.atomic import TMP_PREFIX

_CHUNK = 1 << 20


def temp_beside(target: Path) -> Path:
    """A fresh temporary name in ``target``'s folder (:data:`TMP_PREFIX`: never a finished
    export; the random part keeps two stagings of one target apart)."""
    return target.parent / f"{TMP_PREFIX}{secrets.token_hex(4)}-{target.name}"


class SourceError(Exception):
    """An output's image in the data directory is missing, unreadable or altered."""


class StagedFile:
    """A file written under a temporary name and put in place by :meth:`commit`."""

    def __init__(self, target: Path) -> None:
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        self.temp = temp_beside(target)
        self._handle: IO[bytes] | None = None
        self._text: io.TextIOWrapper | None = None

    def binary(self) -> IO[bytes]:
        """The temporary file opened for writing bytes."""
        if self._handle is None:
            self._handle = open(self.temp, "wb")  # noqa: SIM115 - closed by commit/discard
        return self._handle

    def text(self) -> io.TextIOWrapper:
        """The temporary file as UTF-8 text with ``\\n`` line ends (CSV writes its own)."""
        if self._text is None:
            self._text = io.TextIOWrapper(self.binary(), encoding="utf-8", newline="")
        return self._text

    def _close(self) -> None:
        if self._text is not None:
            self._text.close()
        elif self._handle is not None:
            self._handle.close()
        self._text = self._handle = None

    def commit(self) -> bool:
        """Put the file in place; return ``False`` when the target already had these bytes."""
        self._close()
        if same_bytes(self.temp, self.target):
            self.temp.unlink()
            return False
        os.replace(self.temp, self.target)
        return True

    def discard(self) -> None:
        """Drop the temporary file (an export failed or was cancelled)."""
        self._close()
        self.temp.unlink(missing_ok=True)


def same_bytes(new: Path, old: Path) -> bool:
    """Whether ``old`` exists with exactly the content of ``new`` (size compared first)."""
    try:
        if old.stat().st_size != new.stat().st_size:
            return False
    except FileNotFoundError:
        return False
    return filecmp.cmp(new, old, shallow=False)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def holds(path: Path, sha256: str, size: int) -> bool:
    """Whether ``path`` exists with this size and hash (hashed only when the size matches)."""
    try:
        if path.stat().st_size != size:
            return False
    except FileNotFoundError:
        return False
    return file_sha256(path) == sha256


def copy_verified(source: Path, target: Path, sha256: str, size: int) -> bool:
    """Copy ``source`` to ``target`` unless it already holds the same image.

    The copy is hashed as it is made and only renamed into place when it matches ``sha256``.

    Returns:
        ``True`` when ``target`` was written, ``False`` when it was already up to date.

    Raises:
        SourceError: ``source`` is missing or its content is not the recorded one.
    """
    if holds(target, sha256, size):
        return False
    temp = temp_beside(target)
    digest = hashlib.sha256()
    try:
        with _open_source(source) as src, open(temp, "wb") as dst:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
        if digest.hexdigest() != sha256:
            raise SourceError(f"sha256 of {source} does not match the database")
        shutil.copystat(source, temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return True


def read_verified(source: Path, sha256: str) -> bytes:
    """The bytes of ``source``, checked against ``sha256``.

    Raises:
        SourceError: missing, unreadable, or not the recorded content.
    """
    with _open_source(source) as handle:
        data = handle.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise SourceError(f"sha256 of {source} does not match the database")
    return data


def _open_source(source: Path) -> IO[bytes]:
    try:
        return open(source, "rb")
    except FileNotFoundError as exc:
        raise SourceError(f"image file is missing: {source}") from exc
    except OSError as exc:
        raise SourceError(f"image file cannot be read: {source}: {exc}") from exc
