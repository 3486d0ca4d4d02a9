"""``imagerun compare``: what each route cannot take is said first; --fit; --json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner.cli import main
from runner.cli.compare import parse_fits
from runner.compare import FitChoice
from runner.errors import UsageError
from runner.routes.catalog import env_key
from runner.sandbox import SandboxHandle

from .conftest import write_manifest

ROUTES = ("sandbox-openai", "sandbox-laozhang")


def _invoke(tmp_path: Path, sandbox: SandboxHandle, *args: str) -> tuple[int, str, str]:
    env: dict[str, str | None] = {"IMAGERUN_CONFIG": None, "IMAGERUN_DB": None}
    env[env_key("sandbox-openai", "BASE_URL")] = sandbox.openai_base
    env[env_key("sandbox-laozhang", "BASE_URL")] = sandbox.laozhang_base
    base = ["--db", f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", "--data", str(tmp_path / "d")]
    result = CliRunner().invoke(main, [*base, "compare", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``imagerun.toml`` of the surroundings is read."""
    monkeypatch.chdir(tmp_path)


def test_without_a_choice_nothing_is_sent_and_the_gap_is_named(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "in" / "m.jsonl", 3)
    code, out, err = _invoke(tmp_path, sandbox, str(manifest), "-r", ROUTES[0], "-r", ROUTES[1])
    assert code == 1
    assert "sandbox-openai: takes the manifest as written." in out
    assert "sandbox-laozhang: cannot take size (3 line(s), first line 1" in out
    assert "Nothing was sent" in err
    assert sandbox.sandbox.requests() == []


def test_json_prints_the_comparison(sandbox: SandboxHandle, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "in" / "m.jsonl", 4)
    out_dir = tmp_path / "cmp"
    code, out, err = _invoke(
        tmp_path, sandbox, str(manifest), "-r", ROUTES[0], "-r", ROUTES[1],
        "--fit", "sandbox-laozhang=drop", "--name", "c", "--out", str(out_dir), "--json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data == json.loads((out_dir / "compare.json").read_text("utf-8"))
    assert [r["route"] for r in data["routes"]] == list(ROUTES)
    assert [r["succeeded"] for r in data["routes"]] == [4, 4]
    assert data["plan"]["routes"][1]["choice"] == "drop"
    assert (out_dir / "compare.html").is_file()


def test_parse_fits() -> None:
    assert parse_fits(["adapt"], ROUTES) == dict.fromkeys(ROUTES, FitChoice.ADAPT)
    assert parse_fits(["drop", "sandbox-laozhang=adapt"], ROUTES) == {
        "sandbox-openai": FitChoice.DROP,
        "sandbox-laozhang": FitChoice.ADAPT,
    }
    with pytest.raises(UsageError, match="choose drop or adapt"):
        parse_fits(["keep"], ROUTES)
    with pytest.raises(UsageError, match="not one of the compared routes"):
        parse_fits(["openai=drop"], ROUTES)


def test_each_route_is_priced_before_sending_and_a_rerun_sends_nothing(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "in" / "m.jsonl", 3)
    args = [str(manifest), "-r", ROUTES[0], "-r", ROUTES[1], "--fit", "drop", "--name", "c"]

    code, out, err = _invoke(tmp_path, sandbox, *args)

    assert code == 0, err
    said = " ".join(out.split())  # the terminal may wrap a line
    for route in ROUTES:
        assert re.search(
            rf"{route}: 3 line\(s\) into batch c-{route}, estimated \$[0-9.]+ \(low \$[0-9.]+, "
            rf"high \$[0-9.]+; prices as of [0-9-]+\); every line bought afresh",
            said,
        ), out
    # Priced before the table of what was sent.
    assert said.index("estimated") < said.index("Comparison c")
    assert re.search(r"lines held\s+│\s+3 of 3\s+│\s+3 of 3", out), out
    assert len(sandbox.sandbox.requests()) == 6

    code, out, err = _invoke(tmp_path, sandbox, *args)

    assert code == 0, err
    said = " ".join(out.split())
    assert said.count("all held by this comparison already: nothing to send.") == 2
    assert len(sandbox.sandbox.requests()) == 6
