"""``imagerun status`` of one checkout, and of a baseline checkout on the same data (for
``queue_scale.py``): the command's wall time, CPU and RSS, and ``batch_status`` alone.
"""

from __future__ import annotations

import re
import resource
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from _support import PYTHON, median, timed

from runner.store import migrate
from runner.store.tables import SCHEMA_REVISION

CLI = [PYTHON, "-m", "runner.cli"]
#: The tree under test (this checkout).
TREE = Path(__file__).resolve().parents[1]


def run_timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, float, str]:
    """:func:`timed` plus the CPU seconds (user + system) the command used: on a loaded
    machine wall time alone says little."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, rss_mb, output = timed(cmd, env, cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, rss_mb, cpu, output


#: Run in a child process on the tree under test: the best of ``repeats`` ``batch_status``.
_QUERY_ALONE = """
import sys, time, anyio
from runner.store import Store

async def main():
    store = await Store.open(sys.argv[1])
    try:
        batches = await store.list_batches()
        spent = []
        for _ in range(int(sys.argv[2])):
            started = time.perf_counter()
            await store.batch_status(batches)
            spent.append(time.perf_counter() - started)
        print(min(spent))
    finally:
        await store.close()

anyio.run(main)
"""


def status_of(tree: Path, env: dict[str, str], url: str, tmp: Path, repeats: int) -> dict[str, Any]:
    """``imagerun status`` of the code in ``tree`` on the database ``url``: wall time
    (median), CPU, RSS, and the ``batch_status`` query alone (best, in a child process)."""
    env = {**env, "PYTHONPATH": str(tree), "IMAGERUN_DB": url}
    # An installed wheel has its bytecode; a checkout run with PYTHONDONTWRITEBYTECODE set
    # compiles every module of the tree in each timed run (0.58 s in one profile at load 10).
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(tree / "runner")], check=True)
    walls, cpus, rss = [], [], 0
    for _ in range(repeats):
        wall, rss, cpu, output = run_timed([*CLI, "status"], env, tmp)
        if "Batches" not in output:
            raise RuntimeError(f"status failed:\n{output[-1500:]}")
        walls.append(wall)
        cpus.append(cpu)
    query = subprocess.run(
        [PYTHON, "-c", _QUERY_ALONE, env["IMAGERUN_DB"], str(repeats)],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        "status_s": median(walls),
        "status_cpu_s": median(cpus),
        "status_rss_mb": rss,
        "batch_status_query_s": float(query.stdout.split()[-1]),
    }


def schema_revision(tree: Path) -> str:
    """The Alembic revision the code in ``tree`` expects (its ``SCHEMA_REVISION``)."""
    text = (tree / "runner" / "store" / "tables.py").read_text()
    match = re.search(r'^SCHEMA_REVISION = "(\w+)"', text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no SCHEMA_REVISION in {tree}")
    return match.group(1)


def baseline_copy(db: Path, baseline: Path) -> Path:
    """A copy of ``db`` at the schema the baseline tree expects (downgraded by this tree's
    migrations when the two differ), so that the baseline's status runs no Alembic."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    copy = db.with_name("baseline.db")
    shutil.copy(db, copy)
    revision = schema_revision(baseline)
    if revision != SCHEMA_REVISION:
        migrate.downgrade(f"sqlite+aiosqlite:///{copy}", revision)
    return copy


def status(
    env: dict[str, str], tmp: Path, baseline: Path | None, repeats: int = 3
) -> dict[str, Any]:
    """:func:`status_of` this tree, then the ``baseline`` tree on a copy of the same data."""
    db = tmp / "imagerun.db"
    result = status_of(TREE, env, f"sqlite+aiosqlite:///{db}", tmp, repeats)
    if baseline is not None:
        copy = baseline_copy(db, baseline)
        try:
            before = status_of(baseline, env, f"sqlite+aiosqlite:///{copy}", tmp, repeats)
        finally:
            copy.unlink()
        result.update({f"baseline_{k}": v for k, v in before.items()})
    return result
