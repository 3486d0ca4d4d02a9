"""Compare 200 prompts x 2 sandbox routes (time to the page, its weight) beside the same lines
run as two ordinary batches with a gallery each; edit fidelity on 100 sandbox edits and 100
source-ignoring edits (how many of each are flagged).

    python bench/compare_fidelity.py

The comparison runs first (its column buys all 200 lines per route), then the baseline on
the lines each route was sent (a fresh purchase too: ordinary jobs are keyed apart from a
comparison's).

A measurement, not a test: it prints its figures.
"""

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import anyio
from PIL import Image, ImageOps

from runner import app
from runner.cli.demo import sandbox_environ
from runner.compare import ComparisonOptions, FitChoice
from runner.config import load_settings
from runner.run.worker import RunOptions
from runner.sandbox import SandboxConfig, running_sandbox
from runner.sandbox.render import RenderSpec, render_generation

REPO = Path(__file__).resolve().parents[1]
W = Path(tempfile.mkdtemp(prefix="imagerun-compare-"))
EX = REPO / "jobs" / "examples" / "sources"


def sources():
    d = W / "src"
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("mug.png", "sneaker.jpg"):
        im = Image.open(EX / name).convert("RGB")
        variants = {
            "": im,
            "flip": ImageOps.mirror(im),
            "rot": im.rotate(90, expand=True),
            "crop": im.crop((im.width // 8, im.height // 8, im.width * 7 // 8, im.height * 7 // 8)),
            "small": im.resize((im.width // 2, im.height // 2)),
        }
        for k, v in variants.items():
            p = d / f"{Path(name).stem}-{k or 'orig'}.png"
            v.save(p)
            out.append(p)
    for i in range(5):
        p = d / f"scene{i}.png"
        p.write_bytes(render_generation(RenderSpec(prompt=f"scene {i}", width=100, height=80)))
        Image.open(p).resize((500, 400)).save(p)
        out.append(p)
    return out


def manifest(path, n, *, edits, ignore_every):
    srcs = sources()
    sizes = ["1024x1024", "1536x1024", "1024x1536"]
    with open(path, "w") as f:
        for i in range(n):
            line = {
                "id": f"j{i:03d}",
                "prompt": f"job {i}: recolour the product, keep the scene",
                "size": sizes[i % 3],
            }
            if edits:
                line["images"] = [str(srcs[i % len(srcs)])]
                if ignore_every and i % ignore_every == 1:
                    line["prompt"] += " #IGNORE_SOURCE#"
            elif i % 2:
                line["images"] = [str(srcs[i % len(srcs)])]
            f.write(json.dumps(line) + "\n")
    return path


def weight(folder, page):
    """(page bytes, thumbnails, thumbnail bytes) of a page and its ``thumbs/`` folder."""
    thumbs = [t for t in (folder / "thumbs").iterdir() if t.is_file()]
    return (folder / page).stat().st_size, len(thumbs), sum(t.stat().st_size for t in thumbs)


async def baseline(s, routes, manifests):
    """The same lines as two ordinary batches: submit each, one run, a gallery export each."""
    t = time.perf_counter()
    names = []
    for route in routes:
        name = f"plain-{route}"
        await app.submit(s, manifests[route], route, name=name)
        names.append(name)
    await app.run(s, names, RunOptions(handle_signals=False))
    ran = time.perf_counter() - t
    for name in names:
        await app.export(s, name, out_dir=W / "gallery", formats=["html"], include_failed=True)
    total = time.perf_counter() - t
    t = time.perf_counter()
    for name in names:
        await app.export(s, name, out_dir=W / "gallery2", formats=["html"], include_failed=True)
    pages = time.perf_counter() - t
    sizes = [weight(W / "gallery2" / name, "index.html") for name in names]
    return ran, total, pages, tuple(map(sum, zip(*sizes, strict=True)))


async def comparison(s, routes, m1, handle):
    how = ComparisonOptions(
        name="m200",
        out_dir=W / "out",
        choices={"sandbox-laozhang": FitChoice.DROP},
        run=RunOptions(handle_signals=False),
    )
    t = time.perf_counter()
    r = await app.compare(s, m1, routes, how)
    total = time.perf_counter() - t
    sent = len(handle.sandbox.requests())
    # The same comparison again: nothing added, nothing sent; the page from the store.
    how2 = ComparisonOptions(
        name="m200", out_dir=W / "out2", choices={"sandbox-laozhang": FitChoice.DROP}
    )
    t = time.perf_counter()
    r2 = await app.compare(s, m1, routes, how2)
    page_t = time.perf_counter() - t
    return r, r2, total, page_t, (sent, len(handle.sandbox.requests()) - sent)


async def fidelity(s):
    m2 = manifest(W / "fid.jsonl", 200, edits=True, ignore_every=2)
    await app.submit(s, m2, "sandbox-openai", name="fid")
    await app.run(s, ["fid"], RunOptions(handle_signals=False))
    t = time.perf_counter()
    await app.export(s, "fid", out_dir=W / "fidout", formats=["jsonl"])
    ex_t = time.perf_counter() - t
    rows = [json.loads(line) for line in (W / "fidout" / "fid.jsonl").read_text().splitlines()]
    ign = [r for r in rows if "#IGNORE_SOURCE#" in r["prompt"]]
    ok = [r for r in rows if "#IGNORE_SOURCE#" not in r["prompt"]]

    def rng(v):
        return f"min {min(v):.3f} median {statistics.median(v):.3f} max {max(v):.3f}"

    flagged = sum(r["edit_flag"] != "ok" for r in ok)
    print(f"ordinary edits: {len(ok)}, flagged {flagged} (want 0), scores "
          f"{rng([r['edit_fidelity'] for r in ok])}")  # fmt: skip
    caught = sum(r["edit_flag"] == "ignored_source" for r in ign)
    print(f"source-ignoring edits: {len(ign)}, flagged ignored_source {caught} (want "
          f"{len(ign)}), scores {rng([r['edit_fidelity'] for r in ign])}")  # fmt: skip
    print(f"export jsonl of 200 edits with scoring: {ex_t:.2f} s")


async def main():
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    with running_sandbox(SandboxConfig()) as handle:
        env = sandbox_environ(handle, dict(os.environ))
        s = load_settings(db=f"sqlite+aiosqlite:///{W / 'db.sqlite'}", data=W / "data", environ=env)
        routes = ("sandbox-openai", "sandbox-laozhang")
        m1 = manifest(W / "compare.jsonl", 200, edits=False, ignore_every=0)
        r, r2, total, page_t, sent = await comparison(s, routes, m1, handle)
        lines = [(x.route, x.jobs, x.lines, x.succeeded) for x in r2.summaries]
        assert all(jobs == n == 200 for _, jobs, n, _ in lines), lines
        # Baseline: the lines each route was sent (laozhang's fitted without size), plainly.
        fitted = {route: r.fitted.get(route, m1) for route in routes}
        ran, plain_total, plain_pages, plain_weight = await baseline(s, routes, fitted)
        html, n_thumbs, thumbs = weight(W / "out2", "compare.html")
        print(f"requests: compare {sent[0]} (200 x 2), the same compare again {sent[1]}")
        print("                          compare (1 page)   baseline: 2 batches + 2 galleries")
        print(f"run + page:               {total:8.1f} s         {plain_total:8.1f} s "
              f"(run alone {ran:.1f} s)")  # fmt: skip
        print(f"page only (nothing run):  {page_t:8.2f} s         {plain_pages:8.2f} s")
        print(f"page html:                {html:8d} B         {plain_weight[0]:8d} B")
        print(f"thumbnails:               {n_thumbs:5d}, {thumbs} B   {plain_weight[1]:5d}, "
              f"{plain_weight[2]} B")  # fmt: skip
        for x in r.summaries:
            print(
                "  ",
                x.route,
                f"lines {x.jobs}/{x.lines}",
                x.success_rate,
                x.p50_latency_ms,
                x.p95_latency_ms,
                x.spent_usd,
                x.cost_per_image_usd,
                x.flags,
                x.mean_fidelity,
            )
        await fidelity(s)
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    anyio.run(main)
