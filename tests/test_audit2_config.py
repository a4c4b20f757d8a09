"""Second CLI audit: config.yaml edited between runs of `counteranimal curate` on the same RUN.

An edited threshold or model setting must reach the outputs on the next run: clean's size rules
are re-applied to cached image checks, and scores written under other model, label-space,
class, background or prompt settings are scored again (the stage says so).
"""
from __future__ import annotations

import collections

import yaml

from curation import stats
from pipeline import cli
from pipeline.imageserver import write_photos
from tests.support.fetching import read_samples


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def folder_run(tmp_path, n: int = 6, sizes=(96, 160)):
    tree = tmp_path / "photos"
    write_photos(tree / "goldfish", n, seed=11, sizes=sizes)
    run = tmp_path / "run"
    run.mkdir()
    cfg = {"classes": [{"name": "goldfish", "imagenet_idx": 1}, {"name": "tabby cat", "imagenet_idx": 281}],
           "backgrounds": ["grass", "water"], "label_space": "classes",
           "models": [{"name": "ca-tiny", "id": "tiny"}],          # random weights: nothing to download
           "source": {"kind": "folder", "path": str(tree)},
           "fetch": {"chunk_size": 4, "thread_count": 2}, "clean": {"min_side": 32}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return run


def edit(run, section: str, **values) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    if section:
        cfg.setdefault(section, {}).update(values)
    else:
        cfg.update(values)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def outcomes(run) -> collections.Counter:
    s = read_samples(run)
    return collections.Counter(zip(s.column("status").to_pylist(), s.column("reason").to_pylist()))


def test_edited_clean_size_rules_apply_to_shards_checked_before(tmp_path, capsys):
    run = folder_run(tmp_path)
    code, _, err = run_cli(capsys, "curate", str(run), "--stages", "sources,fetch,clean")
    assert code == 0, err
    assert outcomes(run) == {("ok", None): 6}
    edit(run, "clean", min_side=400)              # every photo is under 400 px now
    code, out, err = run_cli(capsys, "curate", str(run), "--stages", "clean")
    assert code == 0, err
    assert outcomes(run) == {("rejected", "too_small"): 6}
    edit(run, "clean", min_side=32, max_aspect_ratio=1.0)     # only exact squares pass
    assert run_cli(capsys, "curate", str(run), "--stages", "clean")[0] == 0
    s = read_samples(run)
    square = [w == h for w, h in zip(s.column("width").to_pylist(), s.column("height").to_pylist())]
    assert s.column("reason").to_pylist() == [None if sq else "aspect_ratio" for sq in square]


def test_scores_follow_an_edited_label_space(tmp_path, capsys):
    import pyarrow.parquet as pq

    import schemas

    run = folder_run(tmp_path, n=4)
    code, out, err = run_cli(capsys, "curate", str(run), "--stages", "sources,fetch,clean,score")
    assert code == 0, err
    assert set(schemas.read_folder(run / "scores", "scores").column("label_space").to_pylist()) == {"classes"}
    edit(run, "", label_space="imagenet1k")
    code, out, err = run_cli(capsys, "curate", str(run), "--stages", "score")
    assert code == 0, err
    assert "label space changed in config.yaml" in out
    scores = schemas.read_folder(run / "scores", "scores")
    assert scores.num_rows == 4 and set(scores.column("label_space").to_pylist()) == {"imagenet1k"}
    assert set(scores.column("true_label").to_pylist()) == {1}            # goldfish's ImageNet index
    # Nothing changed since: the next run keeps the scores.
    before = {p.name: pq.read_table(p) for p in (run / "scores").glob("[0-9]*.parquet")}
    code, out, err = run_cli(capsys, "curate", str(run), "--stages", "score")
    assert code == 0 and "changed in config.yaml" not in out and "0 images" in out
    assert all(pq.read_table(run / "scores" / n).equals(t) for n, t in before.items())


def test_wilson_interval_widens_for_a_tiny_alpha_instead_of_collapsing():
    lo, hi = stats.wilson(5, 10, alpha=1e-300)
    lo5, hi5 = stats.wilson(5, 10, alpha=0.05)
    assert 0.0 <= lo < lo5 and hi5 < hi <= 1.0


def test_scores_of_photos_gone_from_the_run_are_not_counted(tmp_path, capsys):
    """A shorter source (fewer chunks) leaves no scores of the dropped photos behind for backgrounds."""
    import schemas

    run = folder_run(tmp_path, n=4)
    edit(run, "fetch", chunk_size=2)
    code, out, err = run_cli(capsys, "curate", str(run), "--stages", "sources,fetch,clean,score,backgrounds")
    assert code == 0, err
    assert schemas.read_folder(run / "groups", "groups").num_rows == 4
    photos = sorted((tmp_path / "photos" / "goldfish").iterdir())
    for p in photos[2:]:
        p.unlink()
    code, out, err = run_cli(capsys, "curate", str(run), "--stages", "sources,fetch,clean,score,backgrounds")
    assert code == 0, err
    kept = set(schemas.read_folder(run / "samples", "samples").column("uid").to_pylist())
    assert len(kept) == 2
    assert set(schemas.read_folder(run / "scores", "scores").column("uid").to_pylist()) == kept
    assert set(schemas.read_folder(run / "groups", "groups").column("uid").to_pylist()) == kept


def test_clean_rejecting_every_photo_stops_before_score_with_the_reasons(tmp_path, capsys):
    run = folder_run(tmp_path, n=3)
    assert run_cli(capsys, "curate", str(run), "--stages", "sources,fetch,clean,score")[0] == 0
    edit(run, "clean", min_side=400)
    code, out, err = run_cli(capsys, "curate", str(run))
    assert code == 2
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert "clean rejected every one of the 3 fetched photos (too_small 3)" in err and "clean.min_side" in err
