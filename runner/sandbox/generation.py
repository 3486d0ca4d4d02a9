"""The "model": loading source images, spending the generation time, drawing the pictures.

Faults that a provider raises while generating (5xx, moderation, an upstream 429, a hang)
strike here, after the simulated latency, so a client sees them as late as real ones.
"""

from __future__ import annotations

import functools

import anyio

from runner.sandbox import errors
from runner.sandbox.config import FaultKind, SandboxConfig
from runner.sandbox.exchange import Exchange
from runner.sandbox.headers import retry_headers
from runner.sandbox.ids import request_rng
from runner.sandbox.parsing import ImageCall
from runner.sandbox.render import (
    ImageInfo,
    RenderSpec,
    probe,
    render_copy,
    render_edit,
    render_generation,
)
from runner.sandbox.state import Sandbox

Sources = tuple[list[bytes], bytes | None, tuple[tuple[int, int], ...]]

#: An edit whose prompt contains this ignores its source and draws a fresh picture, as a
#: route that quietly regenerates instead of editing would.
IGNORE_SOURCE_MARKER = "#IGNORE_SOURCE#"
#: An edit whose prompt contains this sends its source back unchanged (fitted to the size).
SAME_SOURCE_MARKER = "#SAME_SOURCE#"


def _checked(data: bytes, param: str, index: int) -> ImageInfo:
    try:
        return probe(data)
    except ValueError:
        raise errors.invalid_request(
            f"Invalid image file or mode for image {index + 1}, please check your image file.",
            param=param,
            code="invalid_image_format",
        ) from None


async def load_sources(sandbox: Sandbox, ex: Exchange, call: ImageCall) -> Sources:
    """Source bytes, the mask, and the sizes that count as input image tokens.

    Raises:
        ApiError: 400 for an image that cannot be loaded or read, or (official rules) a
            mask without alpha or of another size than the first image.
    """
    sources: list[bytes] = []
    infos: list[ImageInfo] = []
    for index, ref in enumerate(call.sources):
        data = await sandbox.loader.load(ref, param="image", origin=ex.origin)
        infos.append(_checked(data, "image", index))
        sources.append(data)
    mask = None
    if call.mask is not None:
        mask = await sandbox.loader.load(call.mask, param="mask", origin=ex.origin)
        info = _checked(mask, "mask", 0)
        official = ex.gateway_group is None or ex.gateway_group.billing == "token"
        if official and not info.has_alpha:
            raise errors.invalid_request(
                "Invalid mask image format - mask image missing alpha channel",
                param="mask",
                code="invalid_image_format",
            )
        if official and infos and (info.width, info.height) != (infos[0].width, infos[0].height):
            raise errors.invalid_value("mask", "The mask must have the same size as the image.")
        infos.append(info)
    return sources, mask, tuple((i.width, i.height) for i in infos)


def latency_s(config: SandboxConfig, seq: int) -> float:
    """This request's simulated generation time (seeded by the request's sequence number)."""
    latency = config.latency
    if latency.jitter == 0:
        return latency.mean
    rng = request_rng(config.seed, seq, "latency")
    if latency.distribution == "normal":
        return max(0.0, rng.gauss(latency.mean, latency.jitter))
    return max(0.0, rng.uniform(latency.mean - latency.jitter, latency.mean + latency.jitter))


def _raise_generation_fault(ex: Exchange) -> None:
    match ex.fault:
        case FaultKind.SERVER_ERROR:
            raise errors.server_error()
        case FaultKind.BAD_GATEWAY:
            raise errors.bad_gateway()
        case FaultKind.UNAVAILABLE:
            raise errors.overloaded()
        case FaultKind.MODERATION:
            raise errors.moderation_blocked(ex.request_id)
        case FaultKind.RATE_LIMIT:
            raise errors.rate_limited(
                metric="requests",
                limit=1,
                model=ex.resolved.model if ex.resolved else "gpt-image-2",
                retry_after_s=1.0,
                headers=retry_headers(ex.profile, 1.0),
            )
        case _:
            return


def _draw(ex: Exchange, sources: list[bytes], mask: bytes | None, grain: bool) -> list[bytes]:
    resolved, call = ex.resolved, ex.call
    assert resolved is not None
    assert call is not None
    specs = [
        RenderSpec(
            prompt=call.prompt,
            width=resolved.width,
            height=resolved.height,
            fmt=resolved.fmt,
            compression=resolved.compression,
            transparent=resolved.background == "transparent",
            variant=k,
            grain=grain,
        )
        for k in range(resolved.images_out)
    ]
    if resolved.edit and sources and IGNORE_SOURCE_MARKER not in call.prompt:
        if SAME_SOURCE_MARKER in call.prompt:
            return [render_copy(spec, sources[0]) for spec in specs]
        return [render_edit(spec, sources[0], mask) for spec in specs]
    return [render_generation(spec) for spec in specs]


def instant(config: SandboxConfig, ex: Exchange, sources: list[bytes]) -> bool:
    """Whether :func:`produce` answers without waiting: no latency, no hang, a tiny image
    drawn inline. The client then has no time to leave, and there is nothing to watch for."""
    return (
        config.tiny
        and not sources
        and ex.fault is not FaultKind.HANG
        and latency_s(config, ex.seq) == 0
    )


async def produce(
    sandbox: Sandbox, ex: Exchange, sources: list[bytes], mask: bytes | None
) -> list[bytes]:
    """Wait out the latency, raise any generation-time fault, then draw the images.

    Raises:
        ApiError: the injected fault (a hang that outlives ``hang_seconds`` answers 504).
    """
    config = sandbox.config
    delay = latency_s(config, ex.seq)
    if delay > 0:
        await anyio.sleep(delay)
    _raise_generation_fault(ex)
    if ex.fault is FaultKind.HANG:
        await anyio.sleep(config.hang_seconds)
        raise errors.gateway_timeout()
    draw = functools.partial(_draw, ex, sources, mask, config.grain)
    # A tiny generated image draws in a fraction of a millisecond (bench/sandbox_throughput.py
    # measures it), less than the thread hop; decoding a source image may take far longer.
    inline = config.tiny and not sources
    try:
        return draw() if inline else await anyio.to_thread.run_sync(draw)
    except ValueError as exc:
        raise errors.invalid_request(str(exc), param="image", code="invalid_image_format") from exc
