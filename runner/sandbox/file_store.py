"""Files uploaded through the Files API (and the batch output files), kept on disk.

Not to be confused with :mod:`runner.sandbox.files`, the images handed out by URL. Bytes live
in a temporary directory of the sandbox (a 10,000-line batch of 1024x1024 images is gigabytes),
only their metadata in memory. The directory goes away with the store (or the process).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import anyio
from starlette.datastructures import UploadFile

from runner.models import Outcome
from runner.sandbox import errors

#: Bytes read from an upload at a time while it is copied to disk.
COPY_CHUNK = 1 << 20
#: Any file may be this large.
MAX_FILE_BYTES = 512 * 1024 * 1024
#: A Batch API input file may be this large.
MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024
#: Batch input and output files expire after 30 days unless told otherwise.
BATCH_FILE_TTL_S = 30 * 24 * 3600
#: Bounds of an ``expires_after.seconds`` (an hour to 30 days).
EXPIRES_AFTER_RANGE = (3600, 2_592_000)


class FilePurpose(StrEnum):
    """What a file is for: the values an OpenAI file object carries."""

    ASSISTANTS = "assistants"
    ASSISTANTS_OUTPUT = "assistants_output"
    BATCH = "batch"
    BATCH_OUTPUT = "batch_output"
    FINE_TUNE = "fine-tune"
    FINE_TUNE_RESULTS = "fine-tune-results"
    VISION = "vision"
    USER_DATA = "user_data"
    EVALS = "evals"


#: Purposes a client may upload with (the others are written by the API itself).
UPLOAD_PURPOSES: frozenset[FilePurpose] = frozenset(
    {
        FilePurpose.ASSISTANTS,
        FilePurpose.BATCH,
        FilePurpose.FINE_TUNE,
        FilePurpose.VISION,
        FilePurpose.USER_DATA,
        FilePurpose.EVALS,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredFile:
    """One file's metadata; its bytes are at ``path``.

    Attributes:
        id: ``file-`` and 22 letters or digits.
        filename: the name the client gave (or the API chose, for output files).
        purpose: what it is for.
        size: bytes.
        created_at: Unix seconds.
        expires_at: Unix seconds, or ``None`` (never).
        path: where the bytes are.
        seq: creation order (lists are ordered by it).
    """

    id: str
    filename: str
    purpose: FilePurpose
    size: int
    created_at: int
    expires_at: int | None
    path: Path
    seq: int

    def to_json(self) -> dict[str, Any]:
        """The OpenAI file object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose.value,
            "status": "processed",
            "status_details": None,
        }


def no_such_file(file_id: str, param: str = "id") -> errors.ApiError:
    """404 for a file id the store does not hold."""
    return errors.ApiError(
        404,
        f"No such File object: {file_id}",
        type="invalid_request_error",
        param=param,
        outcome=Outcome.INVALID_REQUEST,
    )


class UploadStore:
    """Uploaded and generated files: metadata in memory, bytes in a temporary directory."""

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._files: dict[str, StoredFile] = {}
        self._seq = 0
        self._scratch = 0

    def scratch_path(self) -> Path:
        """A fresh path in the store's directory for bytes still being written."""
        if self._dir is None:
            # Made on first use, removed when the store is garbage or the process exits.
            self._dir = Path(tempfile.mkdtemp(prefix="imagerun-sandbox-files-"))
            weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        self._scratch += 1
        return self._dir / f"part-{self._scratch}"

    def add(self, file: StoredFile) -> None:
        """Make ``file`` (its bytes already at ``file.path``) visible to the API."""
        self._files[file.id] = file

    def next_seq(self) -> int:
        """Creation order for the next file."""
        self._seq += 1
        return self._seq

    def get(self, file_id: str) -> StoredFile | None:
        """The file, or ``None``."""
        return self._files.get(file_id)

    def page(
        self, *, purpose: str | None, after: str | None, limit: int, newest_first: bool
    ) -> tuple[list[StoredFile], bool]:
        """Up to ``limit`` files after the one with id ``after``; and whether more follow."""
        chosen = [f for f in self._files.values() if purpose is None or f.purpose == purpose]
        chosen.sort(key=lambda f: f.seq, reverse=newest_first)
        if after is not None:
            ids = [f.id for f in chosen]
            chosen = chosen[ids.index(after) + 1 :] if after in ids else []
        return chosen[:limit], len(chosen) > limit

    def delete(self, file_id: str) -> bool:
        """Forget the file and remove its bytes; ``False`` if there was none."""
        file = self._files.pop(file_id, None)
        if file is None:
            return False
        file.path.unlink(missing_ok=True)
        return True

    def clear(self) -> None:
        """Forget every file."""
        for file_id in list(self._files):
            self.delete(file_id)

    def __iter__(self) -> Iterator[StoredFile]:
        return iter(list(self._files.values()))

    def __len__(self) -> int:
        return len(self._files)


async def copy_upload(upload: UploadFile, target: Path, limit: int) -> int:
    """Copy ``upload`` to ``target`` chunk by chunk; its size.

    Raises:
        ApiError: 400 when it is larger than ``limit`` (nothing is left at ``target``).
    """
    size = 0
    async with await anyio.open_file(target, "wb") as out:
        while chunk := await upload.read(COPY_CHUNK):
            size += len(chunk)
            if size > limit:
                break
            await out.write(chunk)
    if size > limit:
        await anyio.Path(target).unlink(missing_ok=True)
        raise errors.invalid_request(
            f"File is too large: the limit is {limit // (1024 * 1024)} MB.",
            param="file",
            code="file_too_large",
        )
    return size
