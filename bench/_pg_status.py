"""``imagerun status`` on PostgreSQL with a million jobs (for ``queue_scale.py --postgres``).

A scratch database on the server named by the admin URL gets one batch of N jobs written by
SQL (``generate_series``): first all queued, then each with one ``ok``, charged attempt and
one output (as ``queue_scale.py`` finishes its SQLite batch). ``imagerun status`` is timed on
each, by this tree and by the ``--baseline`` tree (the schema taken to its revision by the
migrations here, in place), after ``VACUUM ANALYZE`` (what autovacuum does after a bulk load:
without it PostgreSQL cannot read an index alone). The plan of this tree's spend query is
printed with ``EXPLAIN ANALYZE``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import asyncpg
from sqlalchemy.engine import make_url

from runner.store import migrate
from runner.store.tables import SCHEMA_REVISION

BATCH = "pgbench00000"

_BATCH = """INSERT INTO batches (id, name, route, manifest, manifest_sha256, job_count,
    route_snapshot, created_at)
    VALUES ($1, 'jobs', 'sandbox', '/bench/jobs.jsonl', repeat('0', 64), $2, '{}', now())"""
_JOBS = """INSERT INTO jobs (batch_id, key, ext_id, line, prompt, params, images, meta, state,
    attempts, created_at, updated_at)
    SELECT $1, md5(i::text), i::text, i, 'bench product render ' || i, '{}', '[]', '{}',
        'queued', 0, now(), now()
    FROM generate_series(1, $2) AS i"""
_FINISH = (
    """INSERT INTO attempts (id, job_id, batch_id, number, worker_id, route, provider, shape,
        endpoint, model, billing_unit, state, outcome, http_status, provider_request_id,
        started_at, finished_at, latency_ms, usage, params, images_returned, worst_case_usd,
        expected_usd, charge_status, charge_evidence)
    SELECT 'ir-' || md5(id::text), id, batch_id, 1, 'bench-worker', 'sandbox', 'sandbox',
        'images', '/images/generations', 'gpt-image-1', 'tokens', 'done', 'ok', 200,
        'req_' || md5(id::text), updated_at, updated_at, 812.5,
        '{"input_tokens": 12, "output_tokens": 272, "total_tokens": 284}',
        json_build_object('prompt', prompt), 1, 0.25, 0.011, 'charged', 'policy'
    FROM jobs""",
    """INSERT INTO outputs (job_id, batch_id, attempt_id, k, path, sha256, width, height,
        format, bytes, worker_id, created_at)
    SELECT job_id, batch_id, id, 0, batch_id || '/' || job_id || '-0.png',
        md5(id) || md5(id), 64, 64, 'png', 1234, 'bench-worker', finished_at
    FROM attempts""",
    """UPDATE jobs SET state = 'succeeded', attempts = 1, last_outcome = 'ok',
        first_attempt_at = updated_at, finished_at = updated_at""",
)
_SPEND = """EXPLAIN (ANALYZE, BUFFERS OFF)
    SELECT batch_id, count(*),
        sum(coalesce(observed_usd, expected_usd, 0.0)) FILTER (WHERE charge_status = 'charged'),
        sum(coalesce(observed_usd, expected_usd, worst_case_usd))
            FILTER (WHERE charge_status = 'unknown' AND state = 'done')
    FROM attempts WHERE batch_id IN ($1) GROUP BY batch_id"""

#: ``status_of(tree, env, url, repeats)`` from ``queue_scale``.
StatusOf = Callable[[Path, dict[str, str], str, int], dict[str, Any]]


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _sql(url: str, *statements: str, args: tuple[Any, ...] = ()) -> list[str]:
    conn = await asyncpg.connect(_dsn(url))
    try:
        out: list[str] = []
        for statement in statements:
            if statement.startswith("EXPLAIN"):
                out += [r[0] for r in await conn.fetch(statement, *args)]
            else:
                await conn.execute(statement, *args[: statement.count("$")])
        return out
    finally:
        await conn.close()


def _at_revision(url: str, revision: str) -> None:
    if revision == SCHEMA_REVISION:
        migrate.upgrade(url)
    else:
        migrate.downgrade(url, revision)
    anyio.run(lambda: _sql(url, "VACUUM ANALYZE"))


def _both(
    status_of: StatusOf,
    env: dict[str, str],
    url: str,
    baseline: tuple[Path, str] | None,
    tree: Path,
) -> dict[str, Any]:
    result = status_of(tree, env, url, 3)
    if baseline is not None:
        _at_revision(url, baseline[1])
        before = status_of(baseline[0], env, url, 3)
        _at_revision(url, SCHEMA_REVISION)
        result.update({f"baseline_{k}": v for k, v in before.items()})
    return result


def postgres_status(
    admin_url: str,
    jobs: int,
    env: dict[str, str],
    status_of: StatusOf,
    tree: Path,
    baseline: tuple[Path, str] | None,
) -> dict[str, Any]:
    """Status figures on a queued, then a finished, batch of ``jobs`` jobs in PostgreSQL."""
    admin = make_url(admin_url).set(drivername="postgresql+asyncpg")
    name = f"imagerun_bench_{secrets.token_hex(4)}"
    url = admin.set(database=name).render_as_string(hide_password=False)
    anyio.run(lambda: _sql(admin.render_as_string(hide_password=False), f"CREATE DATABASE {name}"))
    try:
        migrate.upgrade(url)
        anyio.run(lambda: _sql(url, _BATCH, _JOBS, args=(BATCH, jobs)))
        _at_revision(url, SCHEMA_REVISION)
        result = _both(status_of, env, url, baseline, tree)
        anyio.run(lambda: _sql(url, *_FINISH))
        _at_revision(url, SCHEMA_REVISION)
        finished = _both(status_of, env, url, baseline, tree)
        result.update({f"finished_{k}": v for k, v in finished.items()})
        result["spend_plan"] = anyio.run(lambda: _sql(url, _SPEND, args=(BATCH,)))
        return result
    finally:
        drop = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        anyio.run(lambda: _sql(admin.render_as_string(hide_password=False), drop))
