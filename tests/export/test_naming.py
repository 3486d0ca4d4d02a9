"""Export names: templates, sanitising and collision suffixes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from runner.errors import UsageError
from runner.export.naming import MAX_NAME_BYTES, Namer, NameTemplate, sanitise
from runner.store.exports import ExportOutput


def output(
    ext_id: str = "cat-1", *, index: int = 1, k: int = 0, n: int = 1, **meta: Any
) -> ExportOutput:
    return ExportOutput(
        job_id=index,
        ext_id=ext_id,
        index=index,
        state="succeeded",
        prompt="p",
        params={},
        metadata=meta,
        attempts=1,
        last_outcome="ok",
        last_error=None,
        request_id="req_1",
        provider_request_id=None,
        gateway_request_id=None,
        route="r",
        provider="p",
        model="m",
        expected_usd=0.03,
        observed_usd=None,
        charge_status="charged",
        job_expected_usd=0.03,
        job_observed_usd=None,
        k=k,
        outputs_in_job=n,
        path=f"b/{index}-{k}.png",
        sha256="0" * 64,
        width=8,
        height=8,
        format="png",
        bytes=10,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("../evil", "_evil"),
        ("..", ""),
        ("a/b\\c", "a_b_c"),
        ("a..b", "a.b"),
        (" .hidden. ", "hidden"),
        ("x\x00y\nz\x7f", "x_y_z_"),
        ("right\u202eleft", "right_left"),
        ('what?<>:"|*', "what_______"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("tabs\t\tand  spaces", "tabs__and spaces"),
        ("café", "café"),
    ],
)
def test_sanitise_makes_one_safe_path_component(raw: str, safe: str) -> None:
    assert sanitise(raw) == safe


def test_sanitise_caps_the_length_in_utf8_bytes_without_splitting_a_character() -> None:
    name = sanitise("猫" * 200)

    assert len(name.encode()) <= MAX_NAME_BYTES
    assert name == "猫" * (MAX_NAME_BYTES // 3)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{id}", "dog-2"),
        ("{index:04d}_{id}", "0002_dog-2"),
        ("{metadata.sku}", "SKU-2"),
        ("{metadata.size.w}x{metadata.size.h}", "8x9"),
        ("{metadata.missing}-{id}", "-dog-2"),
        ("{metadata.sku:>8}", "   SKU-2"),
        ("{id:05d}", "dog-2"),  # a numeric spec on a string keeps the plain value
    ],
)
def test_templates_render_fields(template: str, expected: str) -> None:
    row = output("dog-2", index=2, sku="SKU-2", size={"w": 8, "h": 9})

    assert NameTemplate(template).render(row) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{nope}", "unknown field {nope}"),
        ("{id!r}", "conversions"),
        ("plain", "names no field"),
        ("{id", "bad name template"),
        ("{metadata.}", "unknown field"),
        ("{index:{k}}", "nested"),
    ],
)
def test_bad_templates_are_usage_errors(template: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        NameTemplate(template)


def test_collisions_get_numbered_suffixes_case_insensitively() -> None:
    namer = Namer(NameTemplate("{metadata.sku}"))
    rows = [output(f"j{i}", index=i, sku=sku) for i, sku in enumerate(["A", "a", "A", "A-2"], 1)]

    names = [namer.claim(row, "png") for row in rows]

    assert names == [
        ("A.png", None),
        ("a-2.png", "a.png"),
        ("A-3.png", "A.png"),
        ("A-2-2.png", "A-2.png"),
    ]


def test_many_equal_names_stay_cheap_and_unique() -> None:
    namer = Namer(NameTemplate("{metadata.sku}"))

    names = [namer.claim(output(f"j{i}", index=i, sku="same"), "png")[0] for i in range(5000)]

    assert len(set(names)) == 5000
    assert names[-1] == "same-5000.png"


def test_several_outputs_of_a_job_get_k_unless_the_template_has_it() -> None:
    rows = [output("dog", k=k, n=3) for k in range(3)]

    plain = Namer(NameTemplate("{id}"))
    with_k = Namer(NameTemplate("{id}_v{k}"))

    assert [plain.claim(r, "png")[0] for r in rows] == ["dog-0.png", "dog-1.png", "dog-2.png"]
    assert [with_k.claim(r, "png")[0] for r in rows] == ["dog_v0.png", "dog_v1.png", "dog_v2.png"]


def test_an_empty_name_falls_back_to_the_id_then_the_position() -> None:
    namer = Namer(NameTemplate("{metadata.sku}"))

    assert namer.claim(output("cat-1"), "png")[0] == "cat-1.png"
    assert namer.claim(output("..", index=7), "png")[0] == "job-7.png"
