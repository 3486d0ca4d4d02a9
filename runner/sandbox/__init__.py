"""The sandbox: a local emulator of every route imagerun speaks.

Use :func:`create_app` in-process (``httpx.ASGITransport``), :func:`running_sandbox` for a
real server in a background thread, and :func:`serve` for ``imagerun sandbox``; build the
knobs with :class:`SandboxConfig` or, from command-line values, :func:`config_from_options`.

Defaults and conventions:

- Port 8765 (what the built-in ``sandbox-*`` routes use); profiles at ``/openai/v1`` (the
  official API) and ``/laozhang/v1`` (the new-api gateway); admin API under ``/_sandbox``.
- Keys are not secrets here. Any ``sk-…`` key works on ``/openai``; on ``/laozhang`` the
  prefix picks the token group: ``sk-default-…`` (also any other prefix),
  ``sk-sora2official-…``, ``sk-enterprise-…``. A key containing ``invalid`` gets 401.
- Every key starts with $100 (``balance_usd``, or per key in ``key_balances``).
- A prompt containing ``forbidden`` (any case) is blocked by moderation
  (``moderation_word``); scripted faults match a marker in the prompt (``fault_rules``).
- An edit whose prompt contains ``#IGNORE_SOURCE#`` ignores its source (a fresh picture, as
  a route that regenerates instead of editing draws); ``#SAME_SOURCE#`` sends the source back.
  Other edits keep the source's scene (tinted and framed in the prompt's colours).
- Failure-charge policy ``new-api`` by default: successes, client timeouts and 200s without
  a usable image are charged; nothing else.
- No latency, no rate limit, no random faults unless configured; ``x-ratelimit-*`` headers
  appear only when ``rpm`` is set.
- The default group refuses ``size``/``quality`` on ``gpt-image-2`` (and ``quality`` on
  ``gpt-image-2-vip``) with 400 ``unsupported_parameter`` instead of ignoring them.
"""

from runner.sandbox.app import create_app
from runner.sandbox.codec import config_from_json, config_to_json
from runner.sandbox.config import (
    DEFAULT_MODERATION_WORD,
    FaultKind,
    FaultRule,
    Latency,
    Profile,
    SandboxConfig,
)
from runner.sandbox.options import config_from_options
from runner.sandbox.records import RequestRecord
from runner.sandbox.server import DEFAULT_PORT, SandboxHandle, running_sandbox, serve
from runner.sandbox.state import Sandbox

__all__ = [
    "DEFAULT_MODERATION_WORD",
    "DEFAULT_PORT",
    "FaultKind",
    "FaultRule",
    "Latency",
    "Profile",
    "RequestRecord",
    "Sandbox",
    "SandboxConfig",
    "SandboxHandle",
    "config_from_json",
    "config_from_options",
    "config_to_json",
    "create_app",
    "running_sandbox",
    "serve",
]
