"""Issue 4's review flags, per seed: how many planted noise photos each flag catches, and how often
it fires on clean photos.

    .venv/bin/python bench/flags.py [--worlds small:0 small:1 small:2 default:0] [--fresh]

For each world (size:seed): build it and train its reference model (reused when already there),
serve the pool on 127.0.0.1 and run `counteranimal curate --stages sources,fetch,clean,score`
(reused when the run's scores exist, unless --fresh), then recompute the review flags from the
run's scores with the config's `clean:` thresholds (curation/clean.py, as the score stage does).
Prints one markdown row per world for bench/RESULTS.md: per flag, the share of the kept ("ok")
photos of each planted kind it fires on. "clean" is the world's noise-free photos; "clean counter"
those of biased classes on a background other than their planted common, the photos a benchmark
of background shortcuts must not lose.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import schemas  # noqa: E402
from curation import atomic, clean, config  # noqa: E402
from curation.world import spec  # noqa: E402
from curation.world.candidates import write_candidate_urls  # noqa: E402
from curation.world.reference import ensure_trained  # noqa: E402
from curation.world.run_config import run_config  # noqa: E402
from pipeline.cli import main as cli  # noqa: E402
from pipeline.imageserver import ImageServer  # noqa: E402

STAGES = "sources,fetch,clean,score"
KINDS = ("wrong_label", "no_animal")   # the planted kinds a review flag is meant for (the rest are rejected)


def curated(root: Path, size: str, seed: int, fresh: bool) -> tuple[Path, Path]:
    world = root / f"{size}-seed{seed}"
    _, model, checkpoint = ensure_trained(world, size, seed)
    run = root / f"{size}-seed{seed}-run"
    if fresh or not list((run / "scores").glob("[0-9]*.parquet")):
        import shutil

        shutil.rmtree(run, ignore_errors=True)
        cfg = run_config(world, model, checkpoint)
        atomic.write_text(run / "config.yaml", config.dump(cfg))
        with ImageServer(world / "pool") as server:
            write_candidate_urls(world, server.base, run / "urls.csv")
            assert cli(["curate", str(run), "--stages", STAGES]) == 0
    return world, run


# The rules before issue 4's tuning: rank below top 5, no neighbours, second class >= 0.3, and
# P(class prompt vs backgrounds) < 0.5 alone (p_animal ignored).
BEFORE = dict(label_noise_top_k=5, label_noise_neighbors=0, ambiguity_min_second=0.3, clarity_min_subject=0.5)


def flag_rates(world: Path, run: Path, before: bool = False) -> dict:
    """{group: (n, {flag: share flagged})} over the run's ok photos, flags recomputed from its scores."""
    cfg = config.load(run)
    # "now": this version's defaults for every flag setting (the run's config.yaml may hold older ones).
    defaults = config.CleanSpec()
    now = {f: getattr(defaults, f) for f in ("label_noise_top_k", "label_noise_neighbors", "label_noise_max_neighbor_share",
                                             "ambiguity_min_second", "clarity_min_subject", "clarity_min_animal")}
    spec = cfg.clean.model_copy(update=BEFORE if before else now)
    truth = {r["uid"]: r for r in pq.read_table(world / "ground_truth.parquet", filters=[("split", "=", "pool")]).to_pylist()}
    plant = {r["class_name"]: r for r in pq.read_table(world / "classes.parquet").to_pylist()}
    source = {r["uid"]: r["source_id"] for r in schemas.read(run / "candidates" / "candidates.parquet",
                                                             "candidates").to_pylist()}
    samples = schemas.read_folder(run / "samples", "samples")
    scores = pa.concat_tables([schemas.read(p, "scores") for p in sorted((run / "scores").glob("[0-9]*.parquet"))])
    if before:
        scores = scores.set_column(scores.schema.get_field_index("p_animal"), "p_animal",
                                   pa.nulls(scores.num_rows, pa.float32()))
    flagged = clean.apply_review_flags(samples, clean.review_flags_by_uid(scores, spec, spec.flag_model
                                                                          or cfg.models[0].model_id))
    groups: dict[str, list[list[str]]] = {}
    for s in flagged.to_pylist():
        if s["status"] != "ok":
            continue
        t = truth[source[s["uid"]]]
        names = [t["noise"] if t["noise"] != "none" else "clean"]
        if t["noise"] == "none" and plant[t["label_class"]]["biased"]:
            names.append("clean common" if t["background"] == plant[t["label_class"]]["planted_common"] else "clean counter")
        for name in names:
            groups.setdefault(name, []).append(s["flags"])
    return {g: (len(rows), {f: sum(f in r for r in rows) / len(rows) for f in clean.MODEL_FLAGS})
            for g, rows in groups.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worlds", nargs="+", default=["small:0", "small:1", "small:2", "default:0"],
                    help="size:seed, size one of " + ", ".join(spec.PRESETS))
    ap.add_argument("--root", default=str(ROOT / ".cache" / "flags"))
    ap.add_argument("--fresh", action="store_true", help="curate again even when the run is there")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    cols = [("wrong_label", "label_noise"), ("no_animal", "unclear"), ("wrong_label", "unclear"),
            ("clean", "label_noise"), ("clean", "unclear"), ("clean", "ambiguous"),
            ("clean counter", "label_noise"), ("clean counter", "unclear"), ("clean common", "label_noise")]
    print("| world, rules | " + " | ".join(f"{g}: {f} %" for g, f in cols) + " | ok photos |")
    print("|---" * (len(cols) + 2) + "|")
    for item in args.worlds:
        size, seed = item.split(":")
        world, run = curated(Path(args.root), size, int(seed), args.fresh)
        for label, before in (("before", True), ("now", False)):
            rates = flag_rates(world, run, before)
            cells = []
            for g, f in cols:
                n, by_flag = rates.get(g, (0, {}))
                cells.append(f"{100 * by_flag[f]:.1f}" if n else "–")
            sizes = ", ".join(f"{g} {rates[g][0]}" for g in ("wrong_label", "no_animal", "clean") if g in rates)
            print(f"| {size} seed {seed} {label} | " + " | ".join(cells) + f" | {sizes} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
