"""Memory with big images: 32 concurrent 3840x2160 PNG outputs, b64 inside JSON as APIs send.

The sandbox (own process) answers with photo-like, barely compressible PNGs (~20 MB each,
~29 MB of JSON), all 32 nearly at once (same picture, so it renders once). imagerun runs them
at concurrency 32; reported is the run's peak RSS (GNU time) and its memory budget.

    python bench/memory.py [--jobs 32] [--runs 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _support import PYTHON, imagerun_env, median, sandbox_process, table, timed, write_results


def one_run(jobs: int) -> tuple[int, float, int]:
    with sandbox_process("--grain") as url, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "big.jsonl"
        # One prompt, distinct ids: distinct jobs, one rendering in the sandbox.
        lines = [
            f'{{"id": "big-{i}", "prompt": "city at dusk, 4k", "size": "3840x2160"}}\n'
            for i in range(jobs)
        ]
        path.write_text("".join(lines))
        env = imagerun_env(root, {"IMAGERUN_ROUTE_SANDBOX_BASE_URL": f"{url}/openai/v1"})
        timed([PYTHON, "-m", "runner.cli", "submit", str(path), "--route", "sandbox"], env, root)
        run = [PYTHON, "-m", "runner.cli", "run", "--concurrency", str(jobs), "--rpm", "100000"]
        wall, rss, output = timed(run, env, root)
        written = sum(1 for p in (root / "data").rglob("*.png"))
        if written != jobs:
            raise RuntimeError(f"{written} of {jobs} images written:\n{output[-2000:]}")
        return rss, wall, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for n in range(args.runs):
        rss, wall, written = one_run(args.jobs)
        runs.append({"peak_rss_mb": rss, "seconds": wall, "images": written})
        print(f"run {n + 1}: peak RSS {rss} MB, {wall:.1f} s, {written} images")
    peak = median([r["peak_rss_mb"] for r in runs])
    print(
        table(
            [[args.jobs, "3840x2160 PNG", f"{peak:.0f}"]], ["jobs", "image", "peak RSS MB (median)"]
        )
    )
    print(
        f"wrote {write_results('memory', {'args': vars(args), 'runs': runs, 'peak_rss_mb': peak})}"
    )


if __name__ == "__main__":
    main()
