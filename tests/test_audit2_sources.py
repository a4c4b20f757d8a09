"""Second CLI audit: odd image files a user's own folder (or a web crawl) holds.

A phone photo stores its pixels sideways and says so in EXIF (orientation 6 = turn 90° clockwise
to view). Fetch must store it as it is meant to be seen: the model scores it and annotators see it
that way, and it is not the same photo as an unrotated copy.
"""
from __future__ import annotations

import io

import numpy as np
import yaml
from PIL import Image

from pipeline import cli
from tests.support.fetching import read_samples, shard_contents


def test_an_exif_rotated_jpeg_is_stored_upright(tmp_path, capsys):
    tree = tmp_path / "photos" / "goldfish"
    tree.mkdir(parents=True)
    pixels = np.zeros((120, 240, 3), np.uint8)
    pixels[:, :120] = 255                              # stored: left half white
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tree / "phone.jpg", quality=95, exif=exif.tobytes())
    Image.fromarray(pixels).save(tree / "plain.jpg", quality=95)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({
        "classes": [{"name": "goldfish", "imagenet_idx": 1}], "backgrounds": ["water", "grass"],
        "models": [{"name": "RN50"}], "source": {"kind": "folder", "path": str(tmp_path / "photos")},
        "fetch": {"chunk_size": 4, "thread_count": 2}, "clean": {"min_side": 32}}, sort_keys=False))
    assert cli.main(["curate", str(run), "--stages", "sources,fetch,clean"]) == 0, capsys.readouterr().err

    samples = read_samples(run).to_pylist()
    by_size = {(s["width"], s["height"]): s for s in samples}
    assert set(by_size) == {(120, 240), (240, 120)}             # the phone photo is portrait
    assert all(s["status"] == "ok" for s in samples)           # and not a duplicate of the plain one
    phone = by_size[(120, 240)]
    stored = shard_contents(run)[phone["shard"]][f"{phone['key']}.jpg"]
    upright = np.asarray(Image.open(io.BytesIO(stored)).convert("L"), dtype=float)
    assert upright.shape == (240, 120)
    assert upright[:100].mean() > 200 and upright[140:].mean() < 50   # turned clockwise: white on top
