"""The `counteranimal` command as a new user meets it: wrong paths, odd inputs, broken servers.

Each user mistake must end in one paragraph on stderr naming the file, row or key, exit code 2
and no traceback; each input row must end in exactly one recorded outcome. The CLI runs
in-process (``pipeline.cli.main``) with real Beam (DirectRunner), real HTTP on 127.0.0.1
(pipeline/imageserver.py) and real files.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import cli
from pipeline.imageserver import ImageServer, write_photos
from tests.support.fetching import read_samples, write_config

FETCH = ["--stages", "sources,fetch"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_paragraph(err: str) -> str:
    assert "Traceback" not in err, err
    assert err.strip() and err.strip().count("\n") == 0, err
    return err.strip()


def outputs(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()} - {"config.yaml", "urls.csv"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    names = write_photos(folder, 4, seed=5, sizes=(96, 160))
    with ImageServer(folder, slow_seconds=3.0) as srv:
        srv.names = names
        yield srv


def url_list_run(run: Path, header: str, lines: list[str], name: str = "urls.csv", **fetch) -> Path:
    write_config(run, fetch={"chunk_size": 4, "thread_count": 4, "timeout": 1.0, **fetch},
                 source={"kind": "url_list", "path": name})
    (run / name).write_text(header + "\n" + "".join(line + "\n" for line in lines))
    return run


# -- the RUN argument and the file system ---------------------------------------------------------

def test_init_on_a_file_names_it(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    code, _, err = run_cli(capsys, "init", str(target))
    assert code == 2
    assert str(target) in assert_one_paragraph(err) and "choose another" in err
    assert target.read_text() == "not a folder"


def test_run_given_as_its_config_file_points_at_the_folder(tmp_path, capsys, server):
    run = url_list_run(tmp_path / "run", "url,class", [f"{server.url('/img/' + server.names[0])},goldfish"])
    for command in (["curate", str(run / "config.yaml")], ["report", str(run / "config.yaml")]):
        code, _, err = run_cli(capsys, *command)
        assert code == 2
        assert_one_paragraph(err)
        assert "is a file, not a run folder" in err and f"`{run}`" in err
    code, _, err = run_cli(capsys, "curate", str(tmp_path / "missing"))
    assert code == 2 and "no such run folder" in assert_one_paragraph(err)
    assert outputs(run) == set()


def test_a_file_in_the_way_of_a_run_folder_is_named_without_a_traceback(tmp_path, capsys, server):
    run = url_list_run(tmp_path / "run", "url,class", [f"{server.url('/img/' + server.names[0])},goldfish"])
    (run / "candidates").write_text("a file where the run keeps a folder")
    code, _, err = run_cli(capsys, "curate", str(run), *FETCH)
    assert code == 2
    assert str(run / "candidates") in assert_one_paragraph(err)
    with pytest.raises(OSError):   # -v shows the real exception and where it came from
        cli.main(["-v", "curate", str(run), *FETCH])


def test_no_stage_named_is_an_error_not_every_stage(tmp_path, capsys, server):
    run = url_list_run(tmp_path / "run", "url,class", [f"{server.url('/img/' + server.names[0])},goldfish"])
    code, _, err = run_cli(capsys, "curate", str(run), "--stages", " , ")
    assert code == 2 and "--stages" in assert_one_paragraph(err)
    assert outputs(run) == set()


def test_error_and_hint_read_as_two_sentences(tmp_path, capsys, server):
    run = url_list_run(tmp_path / "run", "url,class", [f"{server.url('/img/' + server.names[0])},goldfish"])
    code, _, err = run_cli(capsys, "curate", str(run), "--stages", "fetch")
    assert code == 2
    assert "no candidates to fetch. Run the sources stage first" in assert_one_paragraph(err)


# -- URL lists ------------------------------------------------------------------------------------

def test_a_column_named_twice_is_named(tmp_path, capsys, server):
    run = url_list_run(tmp_path / "run", "url,class,url", [f"{server.url('/img/' + server.names[0])},goldfish,x"])
    code, _, err = run_cli(capsys, "curate", str(run), *FETCH)
    assert code == 2
    assert "urls.csv" in assert_one_paragraph(err) and "'url' appears more than once" in err
    assert outputs(run) == set()


def test_jsonl_whose_types_vary_between_lines_is_read_as_text(tmp_path, capsys, server):
    good = server.url("/img/" + server.names[0])
    lines = [json.dumps({"url": good, "class": "goldfish", "id": 7}),
             json.dumps({"url": server.url("/fault/404"), "class": "tabby cat", "id": "x7"}),
             json.dumps({"url": 12, "class": "goldfish", "id": 8.5})]
    run = url_list_run(tmp_path / "run", lines[0], lines[1:], name="urls.jsonl")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["source"]["columns"] = {"id": "id"}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli(capsys, "curate", str(run), *FETCH)
    assert code == 0, err
    candidates = pq.read_table(run / "candidates" / "candidates.parquet")
    assert sorted(candidates.column("source_id").to_pylist()) == ["7", "8.5", "x7"]
    reasons = dict(zip(read_samples(run).column("uid").to_pylist(), read_samples(run).column("reason").to_pylist()))
    by_id = dict(zip(candidates.column("source_id").to_pylist(), candidates.column("uid").to_pylist()))
    assert reasons[by_id["7"]] is None and reasons[by_id["x7"]] == "http_404"
    assert reasons[by_id["8.5"]] == "unsupported_scheme"   # the URL "12": recorded, not dropped

    (run / "urls.jsonl").write_text(lines[0] + "\n" + json.dumps({"url": [good], "class": "goldfish"}) + "\n")
    code, _, err = run_cli(capsys, "curate", str(run), *FETCH)
    assert code == 2
    assert "urls.jsonl: line 2, key 'url'" in assert_one_paragraph(err)


def test_a_source_without_candidates_stops_with_the_reason(tmp_path, capsys, server):
    run = url_list_run(tmp_path / "run", "url,class", [])
    code, out, err = run_cli(capsys, "curate", str(run))
    assert code == 2
    assert "urls.csv" in assert_one_paragraph(err) and "no rows" in err

    (run / "urls.csv").write_text(f"url,class,license\n{server.url('/img/' + server.names[0])},goldfish,All rights reserved\n")
    code, out, err = run_cli(capsys, "curate", str(run))
    assert code == 2
    assert "all 1 rows were rejected (license 1" in assert_one_paragraph(err)
    assert str(run / "candidates_rejected.parquet") in err
    rejected = pq.read_table(run / "candidates_rejected.parquet")   # the row's outcome is on disk
    assert rejected.column("reason").to_pylist() == ["license"]
    assert not (run / "samples").exists()


def test_servers_that_drop_the_connection_or_send_a_page_are_recorded(tmp_path, capsys, server):
    routes = ["/fault/drop.jpg", "/fault/drop-body.jpg", "/fault/html", "/img/" + server.names[1]]
    run = url_list_run(tmp_path / "run", "url,class", [f"{server.url(r)},goldfish" for r in routes])
    code, out, err = run_cli(capsys, "curate", str(run), *FETCH)
    assert code == 0, err
    candidates = pq.read_table(run / "candidates" / "candidates.parquet")
    url_of = dict(zip(candidates.column("uid").to_pylist(), candidates.column("url").to_pylist()))
    samples = read_samples(run)
    got = {url_of[u].split(str(server.port), 1)[1]: (s, r) for u, s, r in zip(
        samples.column("uid").to_pylist(), samples.column("status").to_pylist(), samples.column("reason").to_pylist())}
    assert got == {"/fault/drop.jpg": ("failed", "connection_error"),
                   "/fault/drop-body.jpg": ("failed", "truncated"),
                   "/fault/html": ("failed", "not_an_image"),
                   "/img/" + server.names[1]: ("ok", None)}


# -- models ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b"url,class\nhttp://a/b.jpg,goldfish\n", b"PK\x03\x04" + bytes(64)])
def test_a_checkpoint_that_is_not_one_is_named_before_any_stage(tmp_path, capsys, server, content):
    run = url_list_run(tmp_path / "run", "url,class", [f"{server.url('/img/' + server.names[0])},goldfish"])
    (run / "weights.pt").write_bytes(content)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["models"] = [{"name": "ca-tiny", "pretrained": str(run / "weights.pt"), "id": "mine"}]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = run_cli(capsys, "curate", str(run))
    assert code == 2
    message = assert_one_paragraph(err)
    assert f"{run / 'config.yaml'}: models[0] (mine)" in message and "weights.pt" in message
    assert outputs(run) == {"weights.pt"}   # nothing ran


def test_an_unknown_model_name_names_its_place_in_the_config(tmp_path, capsys, server):
    run = url_list_run(tmp_path / "run", "url,class", [f"{server.url('/img/' + server.names[0])},goldfish"])
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["models"] = [{"name": "RN50"}, {"name": "ViT-B-3"}]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = run_cli(capsys, "curate", str(run))
    assert code == 2
    assert "models[1]" in assert_one_paragraph(err) and "'ViT-B-3'" in err
    assert outputs(run) == set()


# -- world ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, flag", [(["build", "W", "--seed", "-1"], "--seed"),
                                        (["train", "W", "--epochs", "0"], "--epochs")])
def test_world_numbers_out_of_range_are_refused_by_the_parser(tmp_path, capsys, argv, flag):
    argv = [str(tmp_path / "w") if a == "W" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["world", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be at least" in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


def test_help_of_every_command(capsys):
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: counteranimal" in done.stdout, done.stderr
    for argv in (["init"], ["world"], ["world", "build"], ["world", "train"], ["curate"], ["report"], ["annotate"],
                 ["annotate", "push"], ["label-studio"], ["label-studio", "start"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([*argv, "--help"])
        out = capsys.readouterr().out
        assert exit_info.value.code == 0 and out.startswith(f"usage: counteranimal {argv[0]}"), argv


# -- iNaturalist export ---------------------------------------------------------------------------

INAT = Path(__file__).parent / "data" / "inat"


def inat_run(run: Path) -> Path:
    import shutil

    shutil.copytree(INAT, run / "export")
    write_config(run, source={"kind": "inaturalist", "path": "export"})
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["classes"] = [{"name": "ice bear", "imagenet_idx": 296, "inat_taxa": ["Ursus maritimus"]},
                      {"name": "flamingo", "imagenet_idx": 130, "inat_taxa": ["4260"]}]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


@pytest.mark.parametrize("bad_line, expected", [
    ("p\t1999\tobs\t101\tjpg\tCC0\t1\t1\t0\textra", "line {n} has 10 tab-separated fields, the header has 9"),
    ("p\t1999\tobs", "line {n} has 3 tab-separated fields, the header has 9"),
    ("p\t19x9\tobs\t101\tjpg\tCC0\t1\t1\t0", "line {n}: '19x9' in column 'photo_id' is not a number"),
])
def test_a_broken_inaturalist_row_is_named_by_its_line(tmp_path, capsys, bad_line, expected):
    run = inat_run(tmp_path / "run")
    photos = run / "export" / "photos.csv"
    lines = photos.read_text().splitlines()
    lines.insert(3, bad_line)
    photos.write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(capsys, "curate", str(run), "--stages", "sources")
    assert code == 2
    assert str(photos) in assert_one_paragraph(err) and expected.format(n=4) in err
    assert not (run / "candidates").exists()


def test_classes_without_candidates_are_named(tmp_path, capsys, server):
    run = url_list_run(tmp_path / "run", "url,class", [f"{server.url('/img/' + server.names[0])},goldfish"])
    code, out, err = run_cli(capsys, "curate", str(run), "--stages", "sources")
    assert code == 0, err
    assert "1 of 2 classes have no candidates: tabby cat;" in out


def test_fetch_counts_stay_fetch_outcomes_after_clean(tmp_path, capsys, server):
    photo = server.names[2]
    # The same photo twice (a redirect and the file): clean rejects one copy as a duplicate.
    run = url_list_run(tmp_path / "run", "url,class",
                       [f"{server.url('/img/' + photo)},goldfish", f"{server.url('/redirect/' + photo)},goldfish",
                        f"{server.url('/fault/404')},tabby cat"])
    code, out, err = run_cli(capsys, "curate", str(run), "--stages", "sources,fetch,clean")
    assert code == 0, err
    assert "rejected:duplicate 1" in out
    code, out, err = run_cli(capsys, "curate", str(run), "--stages", "fetch")
    assert code == 0, err
    assert "fetch: done: 2 ok, 1 failed (http_404 1)" in out
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["fetch"]["counts"]["reasons"] == {"http_404": 1}


# -- Beam options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("beam_args, expected", [
    (["--runner", "FlinkRuner"], "unknown Beam runner 'FlinkRuner' (did you mean 'FlinkRunner'?)"),
    (["--direct_num_workers", "two"], "argument --direct_num_workers: invalid int value: 'two'"),
    (["--direct_running_mode", "threads"], "argument --direct_running_mode: invalid choice: 'threads'"),
])
def test_bad_beam_option_values_are_one_paragraph_before_any_stage(tmp_path, capsys, server, beam_args, expected):
    run = url_list_run(tmp_path / "run", "url,class", [f"{server.url('/img/' + server.names[0])},goldfish"])
    code, out, err = run_cli(capsys, "curate", str(run), *FETCH, "--", *beam_args)
    assert code == 2
    assert expected in assert_one_paragraph(err) and "arguments after --" in err
    assert outputs(run) == set() and out == ""


def test_importing_beam_through_any_command_module_prints_no_gcp_notice():
    # Beam's GCP modules log "apitools not found" on the root logger when first imported; `release`
    # printed it because its module imports Beam before pipeline/options.py did.
    import subprocess
    import sys

    code = ("import logging; logging.basicConfig(level=logging.WARNING); "
            "import pipeline.release, pipeline.score, pipeline.fetch")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "apitools" not in out.stderr + out.stdout
