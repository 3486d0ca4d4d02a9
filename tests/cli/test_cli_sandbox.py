"""``imagerun sandbox --help`` says which prompts trigger moderation and scripted faults."""

from __future__ import annotations

import re
from collections.abc import Sequence

import httpx
import pytest

from runner.sandbox import DEFAULT_MODERATION_WORD, FaultKind, config_from_options, create_app

from .conftest import Invoke

GENERATIONS = "/openai/v1/images/generations"


def _help(cli: Invoke) -> str:
    result = cli("sandbox", "--help", db=False)
    assert result.exit_code == 0, result.output
    # Click wraps paragraphs at the terminal width: compare words, not lines.
    return " ".join(result.stdout.split())


def test_help_names_the_moderation_word_the_rule_syntax_and_every_fault_kind(
    cli: Invoke,
) -> None:
    text = _help(cli)

    assert f"'{DEFAULT_MODERATION_WORD}', in any case: blocked by moderation" in text
    assert "--moderation-word" in text
    assert "MARKER:KIND[:TIMES][@PROFILE]" in text
    kinds = re.search(r"Fault kinds \(--rule KIND, --faults KIND=RATE\): ([^.]+)\.", text)
    assert kinds is not None, text
    assert kinds.group(1).split(", ") == [k.value for k in FaultKind]


async def _statuses(
    prompts: Sequence[str], key: str = "sk-sandbox-cli", **options: object
) -> list[int]:
    app = create_app(config_from_options(**options))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as client:
        headers = {"Authorization": f"Bearer {key}"}
        return [
            (
                await client.post(
                    GENERATIONS, headers=headers, json={"model": "gpt-image-2", "prompt": p}
                )
            ).status_code
            for p in prompts
        ]


@pytest.mark.anyio
async def test_the_documented_triggers_do_what_the_help_says() -> None:
    word = DEFAULT_MODERATION_WORD.upper()
    # As in the help's example, a rule without TIMES fails every prompt carrying its marker.
    prompts = [f"a {word} kite", "#BUSY# kite", "#BUSY# kite", "a plain kite"]

    statuses = await _statuses(prompts, rules=["#BUSY#:unavailable"])
    unmoderated = await _statuses([f"a {word} kite"], moderation_word="")
    bad_key = await _statuses(["a plain kite"], key="sk-invalid-cli")

    assert statuses == [400, 503, 503, 200]
    assert unmoderated == [200]
    assert bad_key == [401]
