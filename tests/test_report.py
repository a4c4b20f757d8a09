"""The report page: built from real artifacts (conforming tables, a real WebDataset shard of JPEGs),
rendered, then opened in headless Chromium — screenshot and DOM — so a blank or broken page fails."""
from __future__ import annotations

import base64
import io
import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image, ImageDraw, ImageStat

import schemas
from curation import atomic, config, plots, propose, report, stats
from pipeline import cli

MODEL = "tiny/planted"
BACKGROUND_RGB = {"snow": (236, 240, 245), "grass": (84, 150, 60), "water": (40, 100, 170), "sky": (150, 200, 240),
                  "tree": (30, 80, 40), "sand": (220, 200, 150)}
ANIMAL_RGB = {"ice bear": (250, 250, 250), "flamingo": (240, 120, 150), "vulture": (60, 50, 45),
              "zebra": (20, 20, 20)}
# (class, background) -> (photos, planted accuracy). zebra has no real drop and must be dropped.
PLAN = {("ice bear", "snow"): (30, 0.9), ("ice bear", "grass"): (20, 0.25),
        ("flamingo", "water"): (30, 0.9), ("flamingo", "sky"): (20, 0.3),
        ("vulture", "sky"): (24, 0.85), ("vulture", "tree"): (20, 0.2),
        ("zebra", "grass"): (24, 0.8), ("zebra", "sand"): (20, 0.8)}
CLASS_IDX = {"ice bear": 296, "flamingo": 130, "vulture": 23, "zebra": 340}


# -- building a run directory from real artifacts ----------------------------------------------------

def _photo(bg: str, animal: str, rng: random.Random) -> bytes:
    im = Image.new("RGB", (160, 120), BACKGROUND_RGB[bg])
    draw = ImageDraw.Draw(im)
    for _ in range(40):   # texture, so the background reads as a photo rather than a flat swatch
        x, y = rng.randrange(160), rng.randrange(120)
        shade = tuple(max(0, min(255, c + rng.randint(-40, 40))) for c in BACKGROUND_RGB[bg])
        draw.ellipse([x, y, x + rng.randint(4, 14), y + rng.randint(3, 8)], fill=shade)
    x = rng.randint(30, 80)
    draw.ellipse([x, 40, x + 60, 90], fill=ANIMAL_RGB[animal], outline=(0, 0, 0))
    draw.ellipse([x + 50, 30, x + 75, 55], fill=ANIMAL_RGB[animal], outline=(0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _config(run: Path) -> None:
    cfg = config.parse({
        "name": "planted-test",
        "classes": [{"name": c, "imagenet_idx": i} for c, i in CLASS_IDX.items()],
        "backgrounds": list(BACKGROUND_RGB),
        "label_space": "imagenet1k",     # the classes keep their ImageNet indices
        "models": [{"name": "ViT-B-32", "id": MODEL}],
        "thresholds": {"rule": "strict", "min_group_size": 10},
    })
    atomic.write_text(run / "config.yaml", config.dump(cfg))


def build_early_run(run: Path) -> dict:
    """config + candidates + samples (+ shards): a run that has fetched and cleaned, nothing more."""
    rng = random.Random(7)
    _config(run)
    candidates, samples, photos, truth = [], [], [], {}
    n = 0
    for (cls, bg), (count, _) in PLAN.items():
        for _ in range(count):
            uid = f"u{n:04d}"
            n += 1
            candidates.append(dict(uid=uid, url=f"http://127.0.0.1/{uid}.jpg", class_idx=CLASS_IDX[cls],
                                   class_name=cls, source="url_list", source_id=f"world-{n}", license="cc0"))
            truth[uid] = bg
            photos.append((uid, cls, bg))
    failed = {p[0] for p in photos[::17]}            # 404s: never stored
    too_small = {p[0] for p in photos[5::23]} - failed
    noisy = {p[0] for p in photos[2::13]} - failed - too_small     # kept, flagged for review
    shard_of = {}
    for s, chunk in enumerate((photos[: len(photos) // 2], photos[len(photos) // 2:])):
        shard = f"{s:05d}.tar"
        (run / "shards").mkdir(parents=True, exist_ok=True)
        with wds.TarWriter(str(run / "shards" / shard)) as sink:
            for uid, cls, bg in chunk:
                if uid not in failed:
                    sink.write({"__key__": uid, "jpg": _photo(bg, cls, rng), "json": {"uid": uid}})
                    shard_of[uid] = shard
        for uid, cls, bg in chunk:
            status = "failed" if uid in failed else "rejected" if uid in too_small else "ok"
            reason = {"failed": "http_404", "rejected": "too_small", "ok": None}[status]
            samples.append(dict(uid=uid, class_idx=CLASS_IDX[cls], class_name=cls, chunk=s, shard=shard_of.get(uid),
                                key=uid if uid in shard_of else None, status=status, reason=reason,
                                width=160, height=120,
                                flags=["label_noise"] if status == "ok" and uid in noisy else []))
    rejects = [dict(source="url_list", source_id=f"dup{i}", url="http://127.0.0.1/u0000.jpg", reason="duplicate_url",
                    duplicate_of="u0000") for i in range(3)]
    atomic.write_parquet(run / "candidates" / "00000.parquet",
                         schemas.conform(pa.Table.from_pylist(candidates), "candidates"))
    atomic.write_parquet(run / "candidates_rejected.parquet",
                         schemas.conform(pa.Table.from_pylist(rejects), "source_rejects"))
    atomic.write_parquet(run / "samples" / "00000.parquet", schemas.conform(pa.Table.from_pylist(samples), "samples"))
    ok = [p for p in photos if p[0] not in failed and p[0] not in too_small]
    return dict(candidates=candidates, photos=photos, ok=ok, failed=failed, too_small=too_small, noisy=noisy, truth=truth, rng=rng)


def build_full_run(run: Path) -> dict:
    """Everything up to proposals, with ground truth: backgrounds assigned with a few known mistakes."""
    world = build_early_run(run)
    rng = world["rng"]
    scores, groups, per_photo = [], [], []
    wrong_bg = set()
    for i, (uid, cls, bg) in enumerate(world["ok"]):
        correct = rng.random() < PLAN[(cls, bg)][1]
        assigned = bg
        if i % 11 == 3:   # a known share of assignment mistakes, for the confusion matrix
            assigned = next(b for b in BACKGROUND_RGB if b != bg and (cls, b) not in PLAN)
            wrong_bg.add(uid)
        top1 = CLASS_IDX[cls] if correct else 0
        scores.append(dict(uid=uid, model_id=MODEL, class_idx=CLASS_IDX[cls], shard="00000.tar", label_space="classes",
                           true_label=CLASS_IDX[cls], top1=top1, top1_name=cls if correct else "tench",
                           correct=correct, p_true=0.8 if correct else 0.2, true_rank=1 if correct else 3,
                           margin=0.5 if correct else -0.4, top5=[top1], top5_p=[0.8], background=assigned,
                           background_p=[1 / 6] * 6, p_subject=0.9, embedding=[0.0] * 8))
        groups.append(dict(uid=uid, class_idx=CLASS_IDX[cls], class_name=cls, background=assigned,
                           confidence=rng.random(), method="zero-shot", model_id=MODEL, zero_shot=assigned))
        per_photo.append((CLASS_IDX[cls], cls, assigned, correct, i % 2))
    counts = _counts_with_folds(per_photo)
    rows = propose.propose(counts, propose.Rule(min_group_size=10), model_id=MODEL)
    group_stats = []
    for g in counts:
        lo, hi = stats.wilson(g.k, g.n)
        group_stats.append(dict(class_idx=g.class_idx, class_name=g.class_name, background=g.background,
                                model_id=MODEL, metric="top1", source="model", n=g.n, k=g.k, acc=g.acc,
                                acc_lo=lo, acc_hi=hi))
    atomic.write_parquet(run / "scores" / "00000.parquet", schemas.conform(pa.Table.from_pylist(scores), "scores"))
    atomic.write_parquet(run / "groups" / "00000.parquet", schemas.conform(pa.Table.from_pylist(groups), "groups"))
    atomic.write_parquet(run / "proposals.parquet", schemas.conform(pa.Table.from_pylist(rows), "proposals"))
    atomic.write_parquet(run / "group_stats.parquet", schemas.conform(pa.Table.from_pylist(group_stats), "group_stats"))
    deltas = [dict(d, model_id=MODEL) for d in propose.attribute_deltas(counts, sorted({g.background for g in counts}))]
    atomic.write_parquet(run / "attributes.parquet", schemas.conform(pa.Table.from_pylist(deltas), "attribute_deltas"))
    atomic.write_parquet(run / "truth.parquet", pa.Table.from_pylist(
        [{"uid": u, "background": b} for u, b in world["truth"].items()]))
    atomic.write_text(run / "manifest.json", json.dumps(
        {"stages": {"fetch": {"counts": {"ok": len(world["ok"])}, "seconds": 1.5, "finished_at": "2025-01-01T00:00:00"}}}))
    world.update(proposals=rows, wrong_bg=wrong_bg, groups=groups, deltas=deltas)
    return world


def _counts_with_folds(per_photo: list[tuple]) -> list[propose.GroupCount]:
    """Counts per (class, background) with the two folds the held-out drop is measured on."""
    counts = propose.count_groups([p[:4] for p in per_photo])
    out = []
    for g in counts:
        mine = [p for p in per_photo if (p[0], p[2]) == (g.class_idx, g.background)]
        folds = tuple((sum(p[4] == f for p in mine), sum(p[4] == f and p[3] for p in mine)) for f in (0, 1))
        out.append(propose.GroupCount(g.class_idx, g.class_name, g.background, g.n, g.k, g.p_sum, folds=folds))
    return out


# -- headless Chromium --------------------------------------------------------------------------------

def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get"):
        subprocess.run("apt-get update -qq && apt-get install -y -qq chromium", shell=True, capture_output=True,
                       timeout=900)
        found = shutil.which("chromium")
    if not found:
        pytest.skip("chromium is not installed and `apt-get install -y chromium` did not install it")
    return found


def _browse(page: Path, tmp: Path, *mode: str) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}", "--window-size=1280,2000",
           "--virtual-time-budget=5000", *mode, page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def screenshot(page: Path, tmp: Path) -> Image.Image:
    png = tmp / "shot.png"
    _browse(page, tmp, f"--screenshot={png}")
    return Image.open(png).convert("RGB")


def assert_not_blank(shot: Image.Image) -> None:
    colours = shot.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "screenshot has almost no distinct colours: blank page?"
    assert max(ImageStat.Stat(shot).stddev) > 20, "screenshot is nearly uniform: blank page?"


def dom_after_load(page: Path, tmp: Path) -> str:
    """The DOM after load, with a marker counting images the browser actually decoded."""
    probe = tmp / "probe.html"
    probe.write_text(page.read_text().replace(
        "</body>", "<script>window.addEventListener('load',()=>{const i=[...document.images];"
                   "document.body.setAttribute('data-decoded',i.filter(x=>x.complete&&x.naturalWidth>0).length);"
                   "document.body.setAttribute('data-images',i.length)})</script></body>"))
    return _browse(probe, tmp, "--dump-dom").stdout


# -- tests ----------------------------------------------------------------------------------------------

def _section(text: str, anchor: str) -> str:
    return text.split(f'<section id="{anchor}">', 1)[1].split("</section>", 1)[0]


def test_full_report_renders_in_chromium(tmp_path):
    run = tmp_path / "run"
    world = build_full_run(run)
    # Ground truth keyed the planted world's way: by the id the URL list carried (the source id).
    source_ids = {c["uid"]: c["source_id"] for c in world["candidates"]}
    truth = tmp_path / "ground_truth.parquet"
    atomic.write_parquet(truth, pa.Table.from_pylist([{"uid": source_ids[u], "split": "pool", "background": b}
                                                      for u, b in world["truth"].items()]))
    page = report.write(run, truth=truth)
    assert page == run / "report" / "index.html"
    text = page.read_text()
    assert not list(page.parent.glob(".*.tmp")), "temp file left behind"

    # Self-contained: no external URL is loaded.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "<link" not in text and "<script" not in text

    kept = [r for r in world["proposals"] if r["decision"] == "kept"]
    assert {r["class_name"] for r in kept} == {"ice bear", "flamingo", "vulture"}, world["proposals"]

    # Every thumbnail is a real 96 px JPEG, and each kept pair shows min(12, stored) per side.
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', text)
    stored = {}
    for g in world["groups"]:
        stored[(g["class_name"], g["background"])] = stored.get((g["class_name"], g["background"]), 0) + 1
    expected = sum(min(12, stored[(r["class_name"], r[side])]) for r in kept for side in ("common", "counter"))
    assert len(srcs) == expected > 0
    for src in srcs:
        assert src.startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as im:
            assert im.format == "JPEG" and im.size == (96, 96)

    # Funnel numbers and reasons come from the artifacts.
    funnel = _section(text, "funnel")
    assert f'<td class="num">{len(world["photos"]):,}</td>' in funnel                     # candidates
    assert f"http_404 <b>{len(world['failed'])}</b>" in funnel
    assert f"too_small <b>{len(world['too_small'])}</b>" in funnel
    assert "duplicate_url <b>3</b>" in funnel

    # Each drop figure says which estimate it is; the held-out drop stands beside the in-sample one.
    pairs = _section(text, "pairs")
    assert "<b>drop, in-sample</b>" in pairs and "<b>drop, held-out</b>" in pairs and "selection-adjusted" in pairs
    assert '<span class="est">in-sample</span>' in pairs and '<span class="est">held-out</span>' in pairs
    for r in kept:
        row = pairs.split(f'data-class="{r["class_name"]}"', 1)[1].split("</tr>", 1)[0]
        in_sample = re.search(r'data-estimate="in-sample"><b>([-\d.]+) ', row).group(1)
        held_out = re.search(r'data-estimate="held-out">([-\d.–]+)', row).group(1)
        assert in_sample == f"{100 * r['drop']:.1f}"
        assert r["drop_held_out"] is not None and held_out == f"{100 * r['drop_held_out']:.1f}"
    assert pairs.count('id="drop-bar-kept-') == len(kept) and 'id="drop-bar-dropped-' in pairs
    assert pairs.count('id="drop-held-out-') == sum(r["drop_held_out"] is not None for r in world["proposals"])
    assert "held-out drop: 95% interval" in pairs                # the chart's legend names both estimates

    # Background confusion against the ground truth: the known mistakes give a known agreement.
    n_ok = len(world["ok"])
    agree = 100 * (n_ok - len(world["wrong_bg"])) / n_ok
    confusion = _section(text, "confusion")
    assert f"<code>ground_truth.parquet</code>: {agree:.1f}% agree" in confusion
    assert f"({n_ok - len(world['wrong_bg'])} of {n_ok} photos)" in confusion

    assert '<td>fetch</td><td class="num">1.5</td>' in text                # stage timings from manifest.json

    # Seed 2's δ: each class's highest-ranked attribute, with its δ in points.
    section = _section(text, "attributes")
    for r in kept:
        top = next(d for d in world["deltas"] if d["class_name"] == r["class_name"] and d["rank"] == 1)
        row = section.split(f'<tr data-class="{r["class_name"]}">', 1)[1].split("</tr>", 1)[0]
        assert f'<td class="high">{top["attribute"]} <b>{100 * top["delta"]:+.0f}</b> pts' in row, row

    shot = screenshot(page, tmp_path)
    assert_not_blank(shot)
    shutil.copy(tmp_path / "shot.png", tmp_path / "full.png")

    # The pair table is there in the browser's DOM, kept classes first, each with its decision.
    dom = dom_after_load(page, tmp_path)
    table = dom.split('<table class="pairs">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<tr class="(kept|dropped|undecided)" data-class="([^"]+)"', table)
    assert {c for _, c in rows} == set(CLASS_IDX), rows
    assert rows[: len(kept)] == [("kept", r["class_name"]) for r in rows_sorted(kept)], "kept classes come first"
    assert ("dropped", "zebra") in rows
    m = re.search(r'data-decoded="(\d+)" data-images="(\d+)"', dom)
    assert m, "load script did not run: the page did not load"
    assert int(m.group(1)) == int(m.group(2)) == expected, "some thumbnails did not decode in the browser"
    assert dom.count("<svg") >= 1 and dom.count('id="drop-bar-kept-') == len(kept)


def rows_sorted(kept: list[dict]) -> list[dict]:
    return sorted(kept, key=lambda r: (-r["drop"], r["class_name"]))


def test_early_run_says_what_is_missing(tmp_path):
    run = tmp_path / "run"
    world = build_early_run(run)
    page = report.write(run)
    text = page.read_text()
    for artifact in ("scores/", "groups/", "proposals.parquet", "group_stats.parquet", "annotation/verdicts.parquet"):
        assert f"<code>{artifact}</code>" in text, artifact
    assert text.count("stage not run yet") == 3            # grouped, proposed, verified
    assert f'<td class="num">{len(world["ok"]):,}</td>' in text   # clean photos
    assert "<img" not in text and 'id="pairs"' not in text
    assert f"flagged for review: label_noise {len(world['noisy'])}" in text
    assert "<code>counteranimal annotate pull</code>" in text
    shot = screenshot(page, tmp_path)
    assert_not_blank(shot)


def test_cli_prints_the_page_and_rejects_a_bad_truth_file(tmp_path, capsys):
    run = tmp_path / "run"
    build_early_run(run)
    assert cli.main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report" / "index.html")
    bad = tmp_path / "truth.parquet"
    atomic.write_parquet(bad, pa.table({"uid": ["u0000"], "label": ["snow"]}))
    assert cli.main(["report", str(run), "--truth", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "background" in err


def test_report_needs_a_config(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "config.yaml" in capsys.readouterr().err


def test_command_default_matches_the_report():
    from pipeline.commands import report as command
    assert command.PER_SIDE == report.THUMBS_PER_SIDE


def test_human_labels_verdicts_and_model_consensus(tmp_path):
    """Human groups and verdicts feed the funnel's last step and a second confusion table; human
    proposal rows get their own table; with several models the consensus rows lead, showing the
    decision model's figures only."""
    run = tmp_path / "run"
    world = build_full_run(run)
    kept = {r["class_name"] for r in world["proposals"] if r["decision"] == "kept"}
    by_uid = {g["uid"]: g for g in world["groups"]}
    right = [u for u, g in by_uid.items() if g["class_name"] in kept and u not in world["wrong_bg"]]
    wrong = [u for u in sorted(world["wrong_bg"]) if by_uid[u]["class_name"] in kept][:5]
    relabelled = right[:20] + wrong                 # `annotate pull` writes these as RUN/groups/human.parquet
    verified, pending, tied, not_class = right[20:30], right[30:33], right[33:35], right[35:36]
    human = [dict(by_uid[u], background=world["truth"][u], method="human", confidence=1.0) for u in relabelled]
    atomic.write_parquet(run / "groups" / "human.parquet", schemas.conform(pa.Table.from_pylist(human), "groups"))

    def verdict(u, status, is_class="yes"):
        g = by_uid[u]
        return dict(uid=u, class_idx=g["class_idx"], class_name=g["class_name"], n_votes=3,
                    background=world["truth"][u] if status == "verified" else None, is_class=is_class, flags=[],
                    model_background=g["background"], status=status)
    verdicts = ([verdict(u, "verified") for u in relabelled + verified] + [verdict(u, "pending") for u in pending]
                + [verdict(u, "tie") for u in tied] + [verdict(u, "verified", "no") for u in not_class])
    atomic.write_parquet(run / "annotation" / "verdicts.parquet",
                         schemas.conform(pa.Table.from_pylist(verdicts), "verdicts"))
    # A second model, named to sort first, with other figures: the consensus rows must not show them.
    other = [dict(r, model_id="a-other", acc_common=0.5, drop=0.123, drop_lo=0.01, drop_hi=0.3, drop_held_out=0.111)
             for r in world["proposals"]]
    consensus = propose.agree_across_models({MODEL: world["proposals"], "a-other": other})
    by_humans = [dict(r, model_id="all", source="human") for r in consensus]
    atomic.write_parquet(run / "proposals.parquet", schemas.conform(
        pa.Table.from_pylist(world["proposals"] + other + consensus + by_humans), "proposals"))

    text = report.write(run).read_text()
    assert 'Proposed pairs <span class="muted">· all (model labels)</span>' in text
    assert "<h3>After human review" in text and text.count('<table class="pairs human">') == 1
    assert f"<summary>{2 * len(CLASS_IDX)} more rows" in text
    main = text.split('<table class="pairs">', 1)[1].split("</table>", 1)[0]
    for r in world["proposals"]:
        row = main.split(f'data-class="{r["class_name"]}"', 1)[1].split("</tr>", 1)[0]
        assert f'data-estimate="in-sample"><b>{100 * r["drop"]:.1f} ' in row, row
        assert "12.3" not in row and "11.1" not in row and "50.0" not in row, row
        assert f"figures: {MODEL}" in row
    labelled = relabelled + verified + not_class
    agree = len(labelled) - len(wrong)
    assert f"Assigned vs human labels: {100 * agree / len(labelled):.1f}% agree" in text
    assert f"({agree} of {len(labelled)} photos)" in text
    step = re.search(r'<tr><th>verified</th><td class="num">([\d,]+)</td>.*?</tr>', text, re.S)
    assert step and int(step.group(1)) == len(relabelled) + len(verified)
    assert "too few votes yet <b>3</b>" in step.group(0) and "annotators split (tie) <b>2</b>" in step.group(0)
    assert "not the class (annotators: no) <b>1</b>" in step.group(0) and report.NOT_SENT in step.group(0)
    assert "<code>annotation/verdicts.parquet</code>" not in text


def test_undecided_classes_say_what_to_collect(tmp_path):
    run = tmp_path / "run"
    world = build_full_run(run)
    rows = [dict(r) for r in world["proposals"]]
    zebra = next(r for r in rows if r["class_name"] == "zebra")
    zebra.update(decision="undecided", needs="collect ≈23 more photos of zebra on sand (now 16) to tell them apart",
                 needs_background="sand", needs_n=23, reason="undecided: groups too small")
    atomic.write_parquet(run / "proposals.parquet", schemas.conform(pa.Table.from_pylist(rows), "proposals"))
    text = report.write(run).read_text()
    pairs = _section(text, "pairs")
    needs = pairs.split('<div class="needs" id="undecided">', 1)[1].split("</div>", 1)[0]
    assert "Undecided — collect more photos" in needs
    assert '<li data-class="zebra"><b>zebra</b>: collect ≈23 more photos of zebra on sand (now 16)' in needs
    assert '<tr class="undecided" data-class="zebra">' in pairs and 'id="drop-bar-undecided-' in pairs
    assert "undecided, more photos needed" in _section(text, "funnel")
    assert "1 undecided" in text.split('<section id="funnel">', 1)[0]          # the summary card


def test_a_run_written_before_proposals_v2_still_renders(tmp_path):
    """An old proposals.parquet (v1: no held-out, test or needs columns) renders, saying its drop
    interval is not adjusted for the choice and that it has no held-out estimate."""
    run = tmp_path / "run"
    world = build_full_run(run)
    v1 = ["class_idx", "class_name", "source", "model_id", "common", "counter", "n_common", "n_counter",
          "acc_common", "acc_common_lo", "acc_common_hi", "acc_counter", "acc_counter_lo", "acc_counter_hi",
          "drop", "drop_lo", "drop_hi", "p_value", "p_adjusted", "decision", "reason"]
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in v1} for r in world["proposals"]]), run / "proposals.parquet")
    text = report.write(run).read_text()
    pairs = _section(text, "pairs")
    assert "predate selection-adjusted intervals" in pairs and "No held-out drop in this run" in pairs
    assert '<span class="est">held-out</span>' not in pairs and 'id="drop-held-out-' not in pairs
    assert pairs.count('<tr class="kept"') == 3


def test_sections_are_one_list(tmp_path, monkeypatch):
    """A section is one (data function, partial) entry: adding one adds it to the page; a data
    function returning None leaves its section out."""
    run = tmp_path / "run"
    build_early_run(run)
    extra = report.Section("extra", "An added section", lambda page: {"rows": [("answer", "42", False)], "timings": []},
                           "report_settings.html.j2")
    monkeypatch.setattr(report, "SECTIONS", report.SECTIONS + [extra])
    text = report.write(run).read_text()
    assert '<section id="extra"><h2>An added section</h2>' in text and "<th>answer</th><td>42</td>" in text
    assert [m for m in re.findall(r'<section id="(\w+)">', text)] == ["funnel", "confusion", "settings", "extra"]


def test_charts_are_deterministic_svg_and_png(tmp_path):
    rows = [dict(class_name="ice bear", decision="kept", drop=0.6, drop_lo=0.3, drop_hi=0.8, drop_held_out=0.5,
                 drop_held_out_lo=0.2, drop_held_out_hi=0.75),
            dict(class_name="zebra", decision="dropped", drop=0.02, drop_lo=-0.2, drop_hi=0.25)]
    one, two = plots.drop_chart(rows, 5.0), plots.drop_chart(rows, 5.0)
    assert one == two and one.startswith('<svg class="chart drops"') and "<metadata>" not in one
    assert "ice bear" in one and 'id="drop-held-out-0"' in one      # text stays text (svg.fonttype none)
    assert plots.drop_chart([dict(class_name="x", decision="dropped", drop=None)], 5.0) is None
    with plots.style():
        fig = plots.figure(300, 200)
        fig.add_subplot().plot([0, 1], [0, 1])
    svg_path, png_path = plots.save(fig, tmp_path / "line")
    assert svg_path.read_text().startswith("<?xml") and "<svg" in svg_path.read_text()
    with Image.open(png_path) as im:
        assert im.format == "PNG" and im.size == (600, 400)


def test_paper_rule_says_its_interval_and_what_the_strict_rule_keeps(tmp_path):
    run = tmp_path / "run"
    world = build_full_run(run)
    cfg = config.load(run)
    atomic.write_text(run / "config.yaml", config.dump(cfg.model_copy(update={
        "thresholds": cfg.thresholds.model_copy(update={"rule": "paper", "min_group_size": 10})})))
    counts = _counts_with_folds([(CLASS_IDX[g["class_name"]], g["class_name"], g["background"], s["correct"], i % 2)
                                 for i, (g, s) in enumerate(zip(world["groups"], schemas.read_folder(
                                     run / "scores", "scores").to_pylist()))])
    rows = propose.propose(counts, propose.Rule(kind="paper", min_group_size=10), model_id=MODEL)
    kept = [r for r in rows if r["decision"] == "kept"]
    assert kept and all(r["strict_decision"] for r in kept)
    atomic.write_parquet(run / "proposals.parquet", schemas.conform(pa.Table.from_pylist(rows), "proposals"))
    pairs = _section(report.write(run).read_text(), "pairs")
    assert "Rule paper: range &gt; 5 points, groups ≥ 10 photos." in pairs
    assert "95% Newcombe for the two groups, not adjusted for their having been picked" in pairs
    also = sum(r["strict_decision"] == "kept" for r in kept)
    assert f"The default strict rule would also keep {also} of these {len(kept)} kept pairs." in pairs
    assert "No held-out drop in this run (the paper rule has no held-out estimate)" in pairs


def test_background_assignment_says_when_it_is_circular_and_when_it_is_not_to_be_trusted(tmp_path):
    """The decision model judging its own backgrounds is said; under 70% agreement with the truth the
    section warns, and over it, it does not (the fixture's known mistakes: 1 photo in 11)."""
    run = tmp_path / "run"
    world = build_full_run(run)
    confusion = _section(report.write(run).read_text(), "confusion")
    assert 'data-note="circular"' in confusion and f"<code>{MODEL}</code>, the model whose accuracy" in confusion
    assert 'data-warn="low-agreement"' not in confusion          # ~91% agree

    # Truth that disagrees with most assignments: 8 photos in 11 on another background.
    names = sorted(BACKGROUND_RGB)
    moved = {u: (names[(names.index(b) + 1) % len(names)] if i % 11 < 8 else b)
             for i, (u, b) in enumerate(sorted(world["truth"].items()))}
    atomic.write_parquet(run / "truth.parquet", pa.Table.from_pylist([{"uid": u, "background": b} for u, b in moved.items()]))
    confusion = _section(report.write(run).read_text(), "confusion")
    agree = float(re.search(r"([\d.]+)% agree", confusion).group(1))
    assert agree < 70
    assert 'data-warn="low-agreement"' in confusion and "Under 70% agreement" in confusion
