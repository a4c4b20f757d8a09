"""Fetch stage: img2dataset inside Beam against a real loopback server with faults."""
from __future__ import annotations

import hashlib
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from curation import fetch_status, manifest
from curation.netguard import Blocked, NetPolicy
from pipeline import curate, urlguard
from pipeline.imageserver import FAULTS, ImageServer, write_photos
from tests.support.fetching import (candidates_table, image_size, read_samples, shard_contents, write_candidates,
                                    write_config)

N_PHOTOS = 24


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    return folder, write_photos(folder, N_PHOTOS, seed=1, png_every=6)


@pytest.fixture(scope="module")
def server(photos):
    with ImageServer(photos[0], slow_seconds=4.0) as srv:
        yield srv


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- pure rules ---------------------------------------------------------------------------------

def test_policy_refuses_non_public_addresses_unless_allowed():
    strict = NetPolicy()
    for ip in ["10.1.2.3", "192.168.0.1", "172.16.5.5", "127.0.0.1", "169.254.169.254", "224.0.0.1", "0.0.0.0",
               "::1", "fe80::1", "fc00::1", "::ffff:10.0.0.1", "100.64.0.1", "240.0.0.1"]:
        with pytest.raises(Blocked) as exc:
            strict.check_ip(ip)
        assert exc.value.reason == "blocked_address"
    strict.check_ip("93.184.216.34")
    strict.check_ip("2606:4700::1111")
    loopback = NetPolicy(("127.0.0.0/8",))
    loopback.check_ip("127.0.0.1")
    with pytest.raises(Blocked):
        loopback.check_ip("10.255.255.1")   # allowing loopback allows nothing else


def test_policy_schemes_and_file_root(tmp_path):
    web = NetPolicy()
    web.check_scheme("https")
    for scheme in ["ftp", "file", "data", ""]:
        with pytest.raises(Blocked, match="unsupported_scheme"):
            web.check_scheme(scheme)
    root = tmp_path / "photos"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.jpg").write_bytes(b"x")
    (tmp_path / "secret.txt").write_bytes(b"x")
    folder = NetPolicy(file_root=str(root))
    folder.check_scheme("file")
    assert folder.check_file(str(root / "cat" / "a.jpg")) == str((root / "cat" / "a.jpg").resolve())
    with pytest.raises(Blocked, match="blocked_path"):
        folder.check_file(str(root / "cat" / ".." / ".." / "secret.txt"))
    (root / "cat" / "link.jpg").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(Blocked, match="blocked_path"):
        folder.check_file(str(root / "cat" / "link.jpg"))


@pytest.mark.parametrize("status,error,reason", [
    ("success", None, None),
    ("failed_to_download", "HTTP Error 404: Not Found", "http_404"),
    ("failed_to_download", "HTTP Error 503: Service Unavailable", "http_503"),
    ("failed_to_download", "<urlopen error timed out>", "timeout"),
    ("failed_to_download", "The read operation timed out", "timeout"),
    ("failed_to_download", "<urlopen error counteranimal:blocked_address: 10.0.0.1 ...>", "blocked_address"),
    ("failed_to_download", "<urlopen error [Errno 111] Connection refused>", "connection_refused"),
    ("failed_to_download", "Use of image disallowed by X-Robots-Tag directive", "robots_disallowed"),
    ("failed_to_download", "HTTP Error 302: The HTTP server returned a redirect error that would lead to an "
                           "infinite loop.", "too_many_redirects"),
    ("failed_to_download", "IncompleteRead(10 bytes read, 90 more expected)", "truncated"),
    ("failed_to_download", "something new", "download_error"),
    ("failed_to_resize", "Image decoding error", "decode_error"),
    ("failed_to_resize", "counteranimal:too_many_pixels: 20000x20000", "too_many_pixels"),
])
def test_reason_for_img2dataset_errors(status, error, reason):
    assert fetch_status.reason_for(status, error) == reason


def test_chunks_cover_each_candidate_once():
    chunks = fetch_status.plan_chunks(25, 10)
    assert [(c.index, c.start, c.stop) for c in chunks] == [(0, 0, 10), (1, 10, 20), (2, 20, 25)]
    assert [c.name for c in chunks] == ["00000", "00001", "00002"]
    assert fetch_status.plan_chunks(0, 10) == []


# -- the guard on real connections ---------------------------------------------------------------

def test_guard_refuses_private_redirect_before_connecting(server):
    opener = urlguard.build_opener(NetPolicy(("127.0.0.0/8",)), 10_000_000)
    with pytest.raises(urllib.error.URLError) as exc:
        opener.open(server.url("/fault/redirect-private.jpg"), timeout=30)
    assert isinstance(exc.value.reason, Blocked) and exc.value.reason.reason == "blocked_address"
    assert "10.255.255.1" in str(exc.value)


def test_guard_sends_nothing_to_a_refused_address(server):
    before = server.requests
    opener = urlguard.build_opener(NetPolicy(), 10_000_000)   # loopback not allowed
    with pytest.raises(urllib.error.URLError, match="blocked_address"):
        opener.open(server.url("/img/none.jpg"), timeout=5)
    assert server.requests == before


def test_guard_caps_bytes_without_content_length(tmp_path, server):
    opener = urlguard.build_opener(NetPolicy(("127.0.0.0/8",)), 100_000)
    with pytest.raises(Blocked, match="too_many_bytes"):
        opener.open(server.url("/fault/big.jpg"), timeout=5).read()


# -- the fetch stage end to end ---------------------------------------------------------------------

def fault_urls(server) -> dict[str, tuple[str, str]]:
    """URL -> expected (status, reason) for everything that is not a plain photo."""
    expected = {server.url(route): outcome for route, outcome in FAULTS.items()}
    expected[f"http://127.0.0.1:{closed_port()}/gone.jpg"] = ("failed", "connection_refused")
    expected["ftp://127.0.0.1/photo.jpg"] = ("failed", "unsupported_scheme")
    expected["file:///etc/hostname"] = ("failed", "unsupported_scheme")   # not a folder source
    return expected


def test_fetch_records_every_candidate_outcome(tmp_path, photos, server):
    folder, names = photos
    run = tmp_path / "run"
    expected = {server.url(f"/img/{n}"): ("ok", None) for n in names}
    expected[server.url(f"/redirect/{names[0]}")] = ("ok", None)       # a redirect on loopback is fine
    expected.update(fault_urls(server))
    write_config(run, fetch={"max_bytes": 1_000_000, "timeout": 1.5})
    candidates = write_candidates(run, list(expected))

    result = curate.run(run, stages=["fetch"], say=lambda _: None)
    with urllib.request.urlopen("data:,plain") as resp:    # the guard (http(s) only) left with the fetch
        assert resp.read() == b"plain"

    samples = read_samples(run)
    assert samples.column("uid").to_pylist() == candidates.column("uid").to_pylist()   # one row each
    url_of = dict(zip(candidates.column("uid").to_pylist(), candidates.column("url").to_pylist()))
    got = {url_of[r["uid"]]: (r["status"], r["reason"]) for r in samples.to_pylist()}
    assert got == expected

    tars = shard_contents(run)
    assert sorted(tars) == [f"{c:05d}.tar" for c in range(-(-len(expected) // 10))]   # chunks of 10
    stored = {name.rsplit(".", 1)[0] for members in tars.values() for name in members}
    for row in samples.to_pylist():
        if row["status"] != "ok":
            assert row["shard"] is None and row["key"] not in stored and row["sha256"] is None
            continue
        members = tars[row["shard"]]
        jpg, meta = members[f"{row['key']}.jpg"], json.loads(members[f"{row['key']}.json"])
        assert hashlib.sha256(jpg).hexdigest() == row["sha256"] and len(jpg) == row["bytes"]
        assert image_size(jpg) == (row["width"], row["height"]) and max(image_size(jpg)) == 256
        original = image_size((folder / Path(url_of[row["uid"]]).name).read_bytes())
        assert (row["original_width"], row["original_height"]) == original
        assert meta["uid"] == row["uid"] and meta["class_name"] == row["class_name"]
        assert meta["license"] == "cc-by" and meta["attribution"].startswith("(c) tester")

    assert not list((run / "shards").glob(".tmp-*"))
    counts = manifest.read(run)["stages"]["fetch"]["counts"]
    assert counts["ok"] == N_PHOTOS + 1 and counts["candidates"] == len(expected)
    assert counts == {k: v for k, v in result.counts["fetch"].items()}

    # A second run finds every chunk complete: no request reaches the server, nothing changes.
    before = server.requests
    again = curate.run(run, stages=["fetch"], say=lambda _: None)
    assert again.counts["fetch"]["fetched_chunks"] == 0 and server.requests == before
    assert read_samples(run).equals(samples) and shard_contents(run) == tars


def test_folder_source_reads_file_urls_only_under_its_root(tmp_path, photos, server):
    folder, names = photos
    outside = tmp_path / "outside.jpg"
    outside.write_bytes((folder / names[0]).read_bytes())
    run = tmp_path / "run"
    write_config(run, source={"kind": "folder", "path": str(folder)})
    inside = [(folder / n).as_uri() for n in names[:5]]
    write_candidates(run, inside + [outside.as_uri(), server.url(f"/img/{names[1]}")], source="folder")

    curate.run(run, stages=["fetch"], say=lambda _: None)

    table = candidates_table(inside + [outside.as_uri(), server.url(f"/img/{names[1]}")], "folder")
    url_of = dict(zip(table.column("uid").to_pylist(), table.column("url").to_pylist()))
    got = {url_of[r["uid"]]: (r["status"], r["reason"]) for r in read_samples(run).to_pylist()}
    assert got == {**{u: ("ok", None) for u in inside}, outside.as_uri(): ("failed", "blocked_path"),
                   server.url(f"/img/{names[1]}"): ("ok", None)}


def test_leftovers_of_a_killed_chunk_are_removed_and_the_chunk_redone(tmp_path, photos, server):
    _, names = photos
    run = tmp_path / "run"
    write_config(run, fetch={"chunk_size": 4})
    write_candidates(run, [server.url(f"/img/{n}") for n in names[:8]])
    curate.run(run, stages=["fetch"], say=lambda _: None)
    complete = shard_contents(run)
    # What a kill leaves: a temp folder, and a chunk whose shard moved in but whose samples did not.
    (run / "shards" / ".tmp-00001-deadbeef").mkdir()
    (run / "shards" / ".tmp-00001-deadbeef" / "00001.tar").write_bytes(b"partial")
    (run / "samples" / "00001.parquet").unlink()

    again = curate.run(run, stages=["fetch"], say=lambda _: None)

    assert again.counts["fetch"]["fetched_chunks"] == 1
    assert not list((run / "shards").glob(".tmp-*"))
    assert shard_contents(run) == complete
    assert read_samples(run).column("status").to_pylist() == ["ok"] * 8


def test_image_check_reads_the_header_before_any_decode(tmp_path):
    from curation import image_header
    from pipeline.imageserver import bomb_png, photo

    path = tmp_path / "p.png"
    photo(5, (1000, 600)).save(path)
    data = path.read_bytes()
    assert image_header.inspect(data, 600_000) == (1000, 600, "PNG")
    for blob, cap, reason in [(data, 599_999, "too_many_pixels"), (bomb_png(), 10**12, "too_many_pixels"),
                              (data[: len(data) - 200], 10**7, "truncated"), (b"GIF89a" + bytes(4), 10**7,
                                                                               "not_an_image")]:
        with pytest.raises(image_header.ImageRejected) as exc:
            image_header.inspect(blob, cap)
        assert exc.value.reason == reason


def test_padding_after_the_end_marker_is_not_truncation(tmp_path):
    import io

    from curation import image_header
    from pipeline.imageserver import photo

    buf = io.BytesIO()
    photo(3, (200, 150)).convert("RGB").save(buf, format="JPEG")
    jpeg = buf.getvalue()
    assert image_header.inspect(jpeg + bytes(2_000_000), 10**7) == (200, 150, "JPEG")
    assert image_header.inspect(jpeg + b"\n\n", 10**7) == (200, 150, "JPEG")
    with pytest.raises(image_header.ImageRejected) as exc:     # cut short, then padded: still truncated
        image_header.inspect(jpeg[: len(jpeg) // 2] + bytes(5000), 10**7)
    assert exc.value.reason == "truncated"
