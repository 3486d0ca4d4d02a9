"""Compare 200 prompts x 2 sandbox routes (time to the page, its weight); edit fidelity on
100 sandbox edits and 100 source-ignoring edits (how many of each are flagged).

    python bench/compare_fidelity.py

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


async def main():
    with running_sandbox(SandboxConfig()) as handle:
        env = sandbox_environ(handle, dict(os.environ))
        s = load_settings(db=f"sqlite+aiosqlite:///{W / 'db.sqlite'}", data=W / "data", environ=env)
        routes = ("sandbox-openai", "sandbox-laozhang")
        m1 = manifest(W / "compare.jsonl", 200, edits=False, ignore_every=0)
        how = ComparisonOptions(
            name="m200",
            out_dir=W / "out",
            choices={"sandbox-laozhang": FitChoice.DROP},
            run=RunOptions(handle_signals=False),
        )
        t = time.perf_counter()
        r = await app.compare(s, m1, routes, how)
        total = time.perf_counter() - t
        how2 = ComparisonOptions(
            name="m200", out_dir=W / "out2", choices={"sandbox-laozhang": FitChoice.DROP}
        )
        t = time.perf_counter()
        r2 = await app.compare(s, m1, routes, how2)
        page_t = time.perf_counter() - t
        html = r2.page.stat().st_size
        thumbs = sum(p.stat().st_size for p in (W / "out2" / "thumbs").iterdir())
        n_thumbs = len(list((W / "out2" / "thumbs").iterdir()))
        print(f"compare, run included: {total:.1f} s")
        print(f"compare, page only (a second compare, nothing to run): {page_t:.2f} s")
        print(f"page: compare.html {html} B, {n_thumbs} thumbnails {thumbs} B")
        for x in r.summaries:
            print(
                "  ",
                x.route,
                x.success_rate,
                x.p50_latency_ms,
                x.p95_latency_ms,
                x.spent_usd,
                x.cost_per_image_usd,
                x.flags,
                x.mean_fidelity,
            )
        m2 = manifest(W / "fid.jsonl", 200, edits=True, ignore_every=2)
        await app.submit(s, m2, "sandbox-openai", name="fid")
        await app.run(s, ["fid"], RunOptions(handle_signals=False))
        t = time.perf_counter()
        await app.export(s, "fid", out_dir=W / "fidout", formats=["jsonl"])
        ex_t = time.perf_counter() - t
        index = (W / "fidout" / "fid.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in index]
        ign = [r for r in rows if "#IGNORE_SOURCE#" in r["prompt"]]
        ok = [r for r in rows if "#IGNORE_SOURCE#" not in r["prompt"]]

        def rng(v):
            return f"min {min(v):.3f} median {statistics.median(v):.3f} max {max(v):.3f}"

        flagged = sum(r["edit_flag"] != "ok" for r in ok)
        scores = rng([r["edit_fidelity"] for r in ok])
        print(f"ordinary edits: {len(ok)}, flagged {flagged}, scores {scores}")
        caught = sum(r["edit_flag"] == "ignored_source" for r in ign)
        scores = rng([r["edit_fidelity"] for r in ign])
        print(
            f"source-ignoring edits: {len(ign)}, flagged ignored_source {caught}, scores {scores}"
        )
        print(f"export jsonl of 200 edits with scoring: {ex_t:.2f}s")


if __name__ == "__main__":
    anyio.run(main)
