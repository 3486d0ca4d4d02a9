"""A remote batch's input: its lines written to a JSONL file, its large sources uploaded.

Source images that do not fit inline go to the provider as files with purpose ``vision``:
the purpose OpenAI documents for images an API request later references by ``file_id`` as
an image input (``user_data`` is its catch-all alternative). Each is named after our remote
batch and the image's hash, so that after a crash it is found again by name instead of being
uploaded twice; their ids are recorded on the remote batch and deleted once it is applied.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field

import anyio

from runner.errors import AttemptError
from runner.files.atomic import temporary_name
from runner.remote.context import RemoteContext
from runner.remote.lines import SourceUpload, encode_line
from runner.store import RemoteBatch, RemoteLine

#: The purpose of a remote batch's input file.
INPUT_PURPOSE = "batch"
#: The purpose of a source image uploaded for an edit line (see the module docstring).
SOURCE_PURPOSE = "vision"
JSONL = "application/jsonl"


@dataclass(slots=True, kw_only=True)
class Written:
    """What writing the input did: its size, the sources' file ids, the lines that failed."""

    bytes: int = 0
    lines: int = 0
    source_file_ids: dict[str, str] = field(default_factory=dict)
    failed: list[tuple[RemoteLine, AttemptError]] = field(default_factory=list)


def input_filename(rb_id: str) -> str:
    """The input file's name on the provider: our id, to find it again after a crash."""
    return f"imagerun-{rb_id}.jsonl"


def source_filename(rb_id: str, upload: SourceUpload) -> str:
    ext = mimetypes.guess_extension(upload.mime) or ""
    return f"imagerun-{rb_id}-src-{upload.key[:16]}{ext}"


async def write_input(
    ctx: RemoteContext, rb: RemoteBatch, lines: list[RemoteLine], *, resumed: bool
) -> Written:
    """Write the lines of ``rb`` to its input file (temporary file, then renamed), uploading
    the sources that do not fit inline first.

    Args:
        resumed: an earlier process may have uploaded sources already: look for them by name.
    """
    written = Written(source_file_ids=dict(rb.source_file_ids))
    dest = ctx.path(rb.id, "input")
    await anyio.Path(dest.parent).mkdir(parents=True, exist_ok=True)
    temp = dest.parent / temporary_name(dest.name)
    try:
        async with await anyio.open_file(temp, "wb") as out:
            for line in lines:
                try:
                    planned = await ctx.plan(line.job)
                except AttemptError as exc:
                    written.failed.append((line, exc))
                    continue
                for upload in planned.uploads:
                    if upload.key not in written.source_file_ids:
                        written.source_file_ids[upload.key] = await _upload_source(
                            ctx, rb, upload, resumed=resumed
                        )
                data = encode_line(line.start.id, planned, written.source_file_ids)
                await out.write(data)
                written.bytes += len(data)
                written.lines += 1
        await anyio.Path(temp).rename(dest)
    except BaseException:
        await anyio.Path(temp).unlink(missing_ok=True)
        raise
    return written


async def upload_input(ctx: RemoteContext, rb: RemoteBatch, *, resumed: bool) -> str:
    """The input file's id on the provider: found by name after a crash, else uploaded."""
    name = input_filename(rb.id)
    if resumed and (found := await ctx.remote.find_file(name, INPUT_PURPOSE)) is not None:
        return found.id
    uploaded = await ctx.remote.upload(
        ctx.path(rb.id, "input"), filename=name, purpose=INPUT_PURPOSE, mime=JSONL
    )
    return uploaded.id


async def _upload_source(
    ctx: RemoteContext, rb: RemoteBatch, upload: SourceUpload, *, resumed: bool
) -> str:
    name = source_filename(rb.id, upload)
    if resumed and (found := await ctx.remote.find_file(name, SOURCE_PURPOSE)) is not None:
        return found.id
    sent = await ctx.remote.upload_bytes(
        upload.data, filename=name, purpose=SOURCE_PURPOSE, mime=upload.mime
    )
    return sent.id
