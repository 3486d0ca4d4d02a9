"""The reporting and queue commands: submit, status, routes, estimate, and bad ``--db`` URLs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.errors import StoreUnavailable
from runner.models import JobState
from runner.routes import load_catalog

from .conftest import Invoke, status_json

BUILT_IN = (
    "openai",
    "openai-responses",
    "laozhang",
    "laozhang-vip",
    "laozhang-chat",
    "laozhang-official",
    "laozhang-enterprise",
)


def manifest(tmp_path: Path, jobs: int = 3) -> Path:
    path = tmp_path / "kites.jsonl"
    path.write_text(
        "".join(f'{{"id": "k{i}", "prompt": "a kite, take {i}"}}\n' for i in range(jobs)),
        "utf-8",
    )
    return path


def test_submit_twice_adds_nothing_the_second_time(cli: Invoke, tmp_path: Path) -> None:
    path = manifest(tmp_path)

    first = cli("submit", str(path), "--route", "laozhang", "--name", "kites")
    second = cli("submit", str(path), "--route", "laozhang", "--name", "kites")

    assert first.exit_code == 0, first.output
    assert "3 job(s) enqueued" in first.stdout
    batch_id = first.stdout.strip().splitlines()[-1]
    assert second.exit_code == 0, second.output
    assert "Nothing added" in second.stdout
    assert "3 job(s) are already queued" in second.stdout
    [batch] = status_json(cli)["batches"]
    assert (batch["id"], batch["jobs"]) == (batch_id, 3)


def test_status_json_shape(cli: Invoke, tmp_path: Path) -> None:
    assert cli("submit", str(manifest(tmp_path)), "-r", "laozhang", "-n", "kites").exit_code == 0

    data = status_json(cli)

    assert set(data) == {"batches", "workers", "paces", "remote_batches"}
    [batch] = data["batches"]
    assert {
        "id",
        "name",
        "route",
        "manifest",
        "created_at",
        "jobs",
        "states",
        "outputs",
        "attempts",
        "spent_usd",
        "unknown_charges_usd",
        "failures",
        "attempt_failures",
    } <= set(batch)
    assert (batch["name"], batch["route"], batch["jobs"]) == ("kites", "laozhang", 3)
    assert batch["states"] == {s.value: (3 if s is JobState.QUEUED else 0) for s in JobState}
    assert (batch["outputs"], batch["attempts"], batch["spent_usd"]) == (0, 0, 0)
    assert data["workers"] == []
    # No run yet: no route has a learned pace.
    assert data["paces"] == {}
    # The same batch by name, and an unknown one is a clear usage error.
    assert json.loads(cli("status", "kites", "--json").stdout)["batches"] == [batch]
    missing = cli("status", "nope")
    assert missing.exit_code == 2
    assert "no batch with id or name 'nope'" in missing.stderr


def test_routes_json_lists_every_built_in_route(cli: Invoke) -> None:
    result = cli("routes", "--json", db=False)

    assert result.exit_code == 0, result.output
    routes = {r["name"]: r for r in json.loads(result.stdout)}
    catalog = load_catalog(environ={})
    for name in BUILT_IN:
        route = routes[name]
        assert route["provider"] == catalog.get(name).provider
        assert route["endpoints"] == list(catalog.get(name).endpoints)
        assert route["api_key_env"] == catalog.get(name).api_key_env
        # Only the variable's name and whether it is set, never a key.
        assert "api_key" not in route
        assert routes[f"sandbox-{name}"]["mirrors"] == name


def test_routes_table_shows_the_built_in_routes(cli: Invoke) -> None:
    result = cli("routes", db=False)

    assert result.exit_code == 0, result.output
    for name in BUILT_IN:
        assert name in result.stdout


def test_estimate_prints_per_job_rows_and_totals(cli: Invoke, tmp_path: Path) -> None:
    path = manifest(tmp_path, jobs=4)

    text = cli("estimate", str(path), "--route", "laozhang")
    as_json = cli("estimate", str(path), "--route", "laozhang", "--json")

    assert text.exit_code == 0, text.output
    assert "Total for 4 job(s)" in text.stdout
    assert "$0.1200" in text.stdout
    assert "Prices as of" in text.stdout
    data = json.loads(as_json.stdout)
    assert data["jobs"] == 4
    assert data["total"]["typical"] == pytest.approx(0.12)
    assert [j["id"] for j in data["per_job"]] == ["k0", "k1", "k2", "k3"]
    assert status_json(cli)["batches"] == []


@pytest.mark.parametrize(
    ("url", "code", "message"),
    [
        ("mysql://root@localhost/imagerun", 2, "unsupported database 'mysql'"),
        ("not a url", 2, "not a database URL"),
        # No server there: a transient failure (try again later), not a usage error.
        (
            "postgresql+asyncpg://nobody@127.0.0.1:1/imagerun",
            StoreUnavailable.exit_code,
            "is unreachable: ConnectionRefusedError",
        ),
    ],
)
def test_bad_or_unreachable_db_url_exits_with_a_clear_message(
    cli: Invoke, url: str, code: int, message: str
) -> None:
    result = cli("--db", url, "status", db=False)

    assert result.exit_code == code, result.output
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output
