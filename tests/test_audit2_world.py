"""Second CLI audit: a planted world curated as a new user would, with tools of their own.

`counteranimal world urls OUT BASE_URL` must give URLs that a plain static server of OUT/pool/
answers; a fetch that got no photo stops before clean with the reasons; the manifest's counts
are those of the stage's latest run, not a merge with an earlier one.
"""
from __future__ import annotations

import csv
import functools
import json
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from curation.world import generate
from pipeline import cli
from tests.support.fetching import read_samples, write_config
from tests.test_world import tiny_spec


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def static_server():
    """Python's own static file server (`python -m http.server`), serving one folder."""
    servers = []

    def serve(folder: Path) -> str:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield serve
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_world_urls_are_served_by_a_plain_static_server_of_the_pool(tmp_path, capsys, static_server):
    world = tmp_path / "w"
    generate.build(world, tiny_spec())
    base = static_server(world / "pool")
    code, _, err = run_cli(capsys, "world", "urls", str(world), base, str(tmp_path / "urls.csv"))
    assert code == 0, err
    with open(tmp_path / "urls.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    for row in rows:
        with urllib.request.urlopen(row["url"], timeout=5) as resp:
            assert resp.status == 200 and resp.read() == (world / "pool" / f"{row['id']}.jpg").read_bytes()


def test_a_fetch_that_got_no_photo_stops_before_clean_with_the_reasons(tmp_path, capsys, static_server):
    photos = tmp_path / "photos"
    photos.mkdir()
    base = static_server(photos)        # serves an empty folder: every URL is a 404
    run = tmp_path / "run"
    write_config(run, fetch={"chunk_size": 2, "thread_count": 2, "timeout": 2.0})
    (run / "urls.csv").write_text("url,class\n" + "".join(f"{base}/p{i}.jpg,goldfish\n" for i in range(3)))
    code, out, err = run_cli(capsys, "curate", str(run), "--stages", "sources,fetch,clean")
    assert code == 2
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert "none of the 3 candidates could be fetched (http_404 3)" in err and str(run / "samples") in err
    assert "fetch: done: 0 ok, 3 failed (http_404 3)" in out
    assert not (run / "clean").exists()
    assert sorted(read_samples(run).column("reason").to_pylist()) == ["http_404"] * 3   # every row recorded


def test_the_manifest_holds_the_latest_fetch_not_a_merge_with_the_first(tmp_path, capsys, static_server):
    from pipeline.imageserver import write_photos

    photos = tmp_path / "photos"
    names = write_photos(photos, 2, seed=3, sizes=(96, 128))
    base = static_server(photos)
    run = tmp_path / "run"
    write_config(run, fetch={"chunk_size": 2, "thread_count": 2, "timeout": 2.0})
    # First a wrong base URL (every row a 404), then the list fixed: the fixed URLs are new candidates.
    (run / "urls.csv").write_text("url,class\n" + "".join(f"{base}/wrong/{n},goldfish\n" for n in names))
    assert run_cli(capsys, "curate", str(run), "--stages", "sources,fetch")[0] == 0
    (run / "urls.csv").write_text("url,class\n" + "".join(f"{base}/{n},goldfish\n" for n in names))
    code, out, err = run_cli(capsys, "curate", str(run), "--stages", "sources,fetch")
    assert code == 0, err
    assert "fetch: done: 2 ok, 0 failed" in out
    counts = json.loads((run / "manifest.json").read_text())["stages"]["fetch"]["counts"]
    assert (counts["ok"], counts["failed"], counts["reasons"]) == (2, 0, {})
