"""Sources: URL lists in four formats, the iNaturalist export fixture, and folder trees."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from urllib.request import url2pathname

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation import config
from curation.errors import UserError
from curation.sources import load_candidates, normalize_license, uid_for
from curation.sources.inaturalist import attribution
from schemas import conform

INAT = Path(__file__).parent / "data" / "inat"
BASE = {"backgrounds": ["snow", "grass"], "models": [{"name": "ViT-B-32"}]}
CLASSES = [
    {"name": "ice bear", "imagenet_idx": 296, "synonyms": ["polar bear"], "inat_taxa": ["Ursus maritimus"]},
    {"name": "brown bear", "imagenet_idx": 294, "inat_taxa": ["ursus arctos"]},
    {"name": "flamingo", "imagenet_idx": 130, "inat_taxa": ["4260"]},   # the genus, by taxon id
]


def make_cfg(source: dict, **extra):
    return config.parse({**BASE, "classes": CLASSES, "source": source, **extra})


def check_accounting(res) -> None:
    """Contracts hold and every row read has exactly one outcome."""
    conform(res.table, "candidates")
    conform(res.rejected, "source_rejects")
    assert res.table.column("uid").to_pylist() == sorted(res.table.column("uid").to_pylist())
    assert len(set(res.table.column("uid").to_pylist())) == res.table.num_rows
    reasons = {k: v for k, v in res.counts.items() if k not in ("read", "candidates")}
    assert res.counts["candidates"] == res.table.num_rows
    assert sum(reasons.values()) == res.rejected.num_rows
    assert res.counts["read"] == res.table.num_rows + res.rejected.num_rows


# -- URL lists -------------------------------------------------------------------------------

ROWS = [  # photo, link, species, lic, credit
    ("p1", "https://img.example/a.jpg", "Ice Bear", "CC-BY-NC", "Ann"),
    ("p2", "https://img.example/b.jpg", "polar bear", "cc_by", "Bo"),
    ("p3", "HTTPS://IMG.EXAMPLE:443/a.jpg#frag", "ice bear", "CC BY 4.0", "Cy"),   # same URL as p1
    ("p4", "https://img.example/c.jpg", "flamingo", "All rights reserved", "Di"),  # not allowed
    ("p5", "https://img.example/d.jpg", "FLAMINGO", "", "Ed"),                     # no license
    ("p6", "https://img.example/e.jpg", "brown bear", "CC0 1.0", ""),
]
HEADER = ("photo", "link", "species", "lic", "credit")
MAPPING = {"url": "link", "class": "species", "id": "photo", "license": "lic", "attribution": "credit"}


def write_list(path: Path, fmt: str, rows=ROWS, header=HEADER) -> Path:
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        path.write_text("\n".join(sep.join(r) for r in [header, *rows]) + "\n")
    elif fmt == "parquet":
        pq.write_table(pa.table({h: [r[i] for r in rows] for i, h in enumerate(header)}), path)
    else:
        path.write_text("".join(json.dumps(dict(zip(header, r))) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "jsonl"])
def test_url_list_formats_with_column_mapping(tmp_path, fmt):
    write_list(tmp_path / f"list.{fmt}", fmt)
    res = load_candidates(make_cfg({"path": f"list.{fmt}", "columns": MAPPING}), tmp_path)
    check_accounting(res)
    got = {r["source_id"]: r for r in res.table.to_pylist()}
    assert sorted(got) == ["p1", "p2", "p6"]
    assert got["p1"]["class_name"] == "ice bear" and got["p1"]["class_idx"] == 296
    assert got["p2"]["class_name"] == "ice bear"            # synonym, case-insensitive
    assert got["p6"]["class_idx"] == 294
    assert got["p1"]["license"] == "cc-by-nc" and got["p2"]["license"] == "cc-by" and got["p6"]["license"] == "cc0"
    assert got["p1"]["attribution"] == "Ann" and got["p6"]["attribution"] is None
    assert got["p1"]["uid"] == uid_for("https://img.example/a.jpg")
    rejected = {r["source_id"]: r for r in res.rejected.to_pylist()}
    assert rejected["p3"]["reason"] == "duplicate_url" and rejected["p3"]["duplicate_of"] == got["p1"]["uid"]
    assert rejected["p4"]["reason"] == "license" and rejected["p4"]["license"] == "all-rights-reserved"
    assert rejected["p5"]["reason"] == "license" and rejected["p5"]["license"] is None
    assert res.counts == {"read": 6, "candidates": 3, "duplicate_url": 1, "license": 2}


def test_format_from_config_beats_suffix_and_reruns_are_stable(tmp_path):
    write_list(tmp_path / "list.txt", "csv")     # .txt would read as TSV
    cfg = make_cfg({"path": "list.txt", "format": "csv", "columns": MAPPING})
    first, second = load_candidates(cfg, tmp_path), load_candidates(cfg, tmp_path)
    assert first.table.num_rows == 3
    assert first.table.equals(second.table) and first.rejected.equals(second.rejected)


def test_list_without_license_column_keeps_null_and_is_not_filtered(tmp_path):
    write_list(tmp_path / "l.csv", "csv", [(r[1], r[2]) for r in ROWS], ("url", "class"))
    res = load_candidates(make_cfg({"path": "l.csv"}), tmp_path)   # default column names, absent
    check_accounting(res)
    assert res.table.num_rows == 5                                # only the duplicate goes
    assert res.table.column("license").null_count == 5
    assert sorted(res.table.column("source_id").to_pylist()) == ["1", "2", "4", "5", "6"]  # row numbers
    # A default license from the config applies and is checked against the allow-list.
    res = load_candidates(make_cfg({"path": "l.csv", "license": "CC BY-ND"}, license_allow=["cc-by"]), tmp_path)
    assert res.table.num_rows == 0 and res.counts == {"read": 6, "candidates": 0, "license": 6}


def test_uid_normalization():
    assert uid_for("HTTP://Example.COM:80/a.jpg#x") == uid_for(" http://example.com/a.jpg")
    assert uid_for("http://example.com/a.jpg") != uid_for("http://example.com/A.jpg")   # paths are case-sensitive
    assert uid_for("http://example.com/a.jpg?s=1") != uid_for("http://example.com/a.jpg?s=2")
    assert len(uid_for("file:///x/y.jpg")) == 16


@pytest.mark.parametrize("raw,want", [
    ("CC-BY-NC", "cc-by-nc"), ("cc_by_nc", "cc-by-nc"), ("CC BY-NC 4.0", "cc-by-nc"), ("CC-BY-NC-SA", "cc-by-nc-sa"),
    ("CC0", "cc0"), ("CC0 1.0", "cc0"), ("CC-Zero", "cc0"),
    ("https://creativecommons.org/licenses/by-sa/4.0/", "cc-by-sa"),
    ("http://creativecommons.org/publicdomain/zero/1.0/", "cc0"), ("Public Domain", "pd"),
    ("GPL-2.0-or-later", "gpl-2.0-or-later"), ("", None), (None, None), ("  ", None),
])
def test_license_normalization(raw, want):
    assert normalize_license(raw) == want


def test_unknown_classes_are_one_error_listing_all(tmp_path):
    rows = [("u1", "ice bear"), ("u2", "zebra"), ("u3", "Okapi"), ("u4", "zebra"), ("u5", ""), ("u6", "flamingo")]
    write_list(tmp_path / "l.csv", "csv", rows, ("url", "class"))
    with pytest.raises(UserError) as exc:
        load_candidates(make_cfg({"path": "l.csv"}), tmp_path)
    msg = str(exc.value)
    assert "l.csv" in msg and "3 unknown class names" in msg
    assert "'zebra' (row 2, row 4)" in msg and "'Okapi' (row 3)" in msg and "(empty) (row 5)" in msg


@pytest.mark.parametrize("name,content,needle", [
    ("bad.csv", "url,class\nhttp://a/1,ice bear\nhttp://a/2,ice bear,extra\n", "line 3 has 3 fields"),
    ("quote.csv", 'url,class\nhttp://a/1,ice bear\n"http://a/2,ice bear\n', "never closed"),
    ("bad.jsonl", '{"url": "http://a/1", "class": "ice bear"}\n{"url": \n', "line 2 is not valid JSON"),
    ("bad.parquet", "not parquet", "not a readable parquet file"),
    ("empty.csv", "", "empty file"),
    ("latin1.csv", b"url,class\nhttp://a/\xe9,ice bear\n", "not UTF-8"),
])
def test_malformed_file_error_names_file_and_line(tmp_path, name, content, needle):
    (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError) as exc:
        load_candidates(make_cfg({"path": name}), tmp_path)
    assert str(tmp_path / name) in str(exc.value) and needle in str(exc.value)


def test_list_errors_name_file_row_and_column(tmp_path):
    write_list(tmp_path / "l.csv", "csv", [("http://a/1", "ice bear"), (" ", "flamingo")], ("url", "class"))
    with pytest.raises(UserError, match=r"l\.csv: row 2, column 'url': empty url"):
        load_candidates(make_cfg({"path": "l.csv"}), tmp_path)
    write_list(tmp_path / "m.csv", "csv", [("http://a/1", "ice bear")], ("url", "class"))
    with pytest.raises(UserError, match=r"m\.csv: no column 'species' \(source\.columns\.class\); the file has: url"):
        load_candidates(make_cfg({"path": "m.csv", "columns": {"class": "species"}}), tmp_path)
    with pytest.raises(UserError, match=r"no column 'rights' \(source\.columns\.license\)"):
        load_candidates(make_cfg({"path": "m.csv", "columns": {"license": "rights"}}), tmp_path)
    with pytest.raises(UserError, match=r"missing\.csv: file not found"):
        load_candidates(make_cfg({"path": "missing.csv"}), tmp_path)
    (tmp_path / "l.xlsx").write_text("x")
    with pytest.raises(UserError, match="set source.format"):
        load_candidates(make_cfg({"path": "l.xlsx"}), tmp_path)


# -- iNaturalist export ----------------------------------------------------------------------

ALLOW = ["cc0", "cc-by", "cc-by-nc", "cc-by-sa"]


def inat(tmp_path=None, folder=INAT, classes=CLASSES, **source):
    cfg = config.parse({**BASE, "classes": classes, "license_allow": ALLOW,
                        "source": {"kind": "inaturalist", "path": str(folder), **source}})
    return load_candidates(cfg, tmp_path)


def test_inat_selects_taxa_with_descendants_and_builds_urls():
    res = inat()
    check_accounting(res)
    got = {r["source_id"]: r for r in res.table.to_pylist()}
    # 1001/1002: one observation, positions 0 and 1; 1008: subspecies of Ursus arctos;
    # 1011/1012: species under the genus named by id; 1018: observer missing from observers.csv.
    assert sorted(got) == ["1001", "1002", "1003", "1006", "1008", "1011", "1012", "1018"]
    assert {k: got[k]["class_name"] for k in got} == {
        "1001": "ice bear", "1002": "ice bear", "1003": "ice bear", "1018": "ice bear",
        "1006": "brown bear", "1008": "brown bear", "1011": "flamingo", "1012": "flamingo"}
    assert got["1008"]["class_idx"] == 294 and got["1011"]["class_idx"] == 130
    assert got["1006"]["url"] == "https://inaturalist-open-data.s3.amazonaws.com/photos/1006/medium.png"
    assert got["1003"]["url"].endswith("/photos/1003/medium.jpg")
    # Attribution: name, else login, else the observer id; iNaturalist's wording.
    assert got["1001"]["attribution"] == "(c) Aputi Kigutikak, some rights reserved (CC BY-NC)"
    assert got["1003"]["attribution"] == "(c) tundra_jo, no rights reserved (CC0)"
    assert got["1006"]["attribution"] == '(c) Jane "JD" Doe, some rights reserved (CC BY-SA)'
    assert got["1018"]["attribution"] == "(c) iNaturalist user 109, some rights reserved (CC BY)"
    assert got["1006"]["license"] == "cc-by-sa"


def test_inat_rejects_are_counted_with_reasons():
    res = inat()
    rejected = {(r["source_id"], r["reason"]) for r in res.rejected.to_pylist()}
    assert rejected == {("1004", "license"), ("1007", "license"), ("1010", "license"),   # ND / NC-SA
                        ("1005", "quality_grade"), ("1016", "quality_grade"),          # needs_id, casual
                        ("1009", "inactive_taxon"), ("1012", "duplicate_url")}
    assert res.counts == {"read": 15, "candidates": 8, "duplicate_url": 1, "inactive_taxon": 1,
                          "license": 3, "quality_grade": 2}
    # Photos of unconfigured taxa (genus Ursus, Mammalia, no taxon, another order) are not read.
    seen = set(res.table.column("source_id").to_pylist()) | {s for s, _ in rejected}
    assert seen.isdisjoint({"1013", "1014", "1015", "1017"})


def test_inat_options_change_selection():
    res = inat(first_photo_only=True, quality_grades=["research", "needs_id", "casual"], photo_size="original",
               photo_url_template="http://127.0.0.1:9/p/{photo_id}_{size}.{extension}")
    check_accounting(res)
    reasons = {r["source_id"]: r["reason"] for r in res.rejected.to_pylist()}
    assert reasons["1002"] == "not_first_photo" and reasons["1011"] == "not_first_photo"
    assert "1005" in res.table.column("source_id").to_pylist()     # needs_id now allowed
    assert "http://127.0.0.1:9/p/1005_original.jpeg" in res.table.column("url").to_pylist()


def test_inat_name_prefers_active_taxon_and_nearest_class_wins():
    classes = [{"name": "flamingo", "imagenet_idx": 130, "inat_taxa": ["Phoenicopterus roseus"]},
               {"name": "bear", "inat_taxa": ["41637"]},                       # genus Ursus …
               {"name": "ice bear", "imagenet_idx": 296, "inat_taxa": ["URSUS MARITIMUS"]}]   # … but this is nearer
    res = inat(classes=classes)
    by_class = {}
    for r in res.table.to_pylist():
        by_class.setdefault(r["class_name"], set()).add(r["source_id"])
    assert by_class["flamingo"] == {"1011"}                       # roseus (4263) only; ruber not selected
    assert by_class["ice bear"] == {"1001", "1002", "1003", "1018"}
    assert by_class["bear"] == {"1006", "1008", "1013"}           # arctos, its subspecies, the genus itself


def test_inat_unknown_taxa_error_lists_them_all():
    classes = [{**CLASSES[0], "inat_taxa": ["Ursus maritimus", "Ursus maritmus"]},
               {**CLASSES[1], "inat_taxa": ["99999999"]}]
    with pytest.raises(UserError) as exc:
        inat(classes=classes)
    msg = str(exc.value)
    assert "taxa.csv" in msg and "2 inat_taxa match no taxon" in msg
    assert "ice bear: 'Ursus maritmus'" in msg and "brown bear: '99999999'" in msg


def test_inat_gzipped_export_and_broken_exports(tmp_path):
    gz = tmp_path / "gz"
    gz.mkdir()
    for f in INAT.glob("*.csv"):
        (gz / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))
    assert inat(folder=gz).table.equals(inat().table)

    broken = tmp_path / "broken"
    shutil.copytree(INAT, broken)
    (broken / "observers.csv").unlink()
    with pytest.raises(UserError, match=r"broken: the iNaturalist export has no observers\.csv"):
        inat(folder=broken)
    shutil.copy(INAT / "observers.csv", broken)
    lines = (INAT / "photos.csv").read_text().splitlines()
    (broken / "photos.csv").write_text("\n".join([lines[0].replace("license", "licence"), *lines[1:]]) + "\n")
    with pytest.raises(UserError, match=r"photos\.csv: missing column 'license'"):
        inat(folder=broken)
    (broken / "photos.csv").write_text("\n".join([lines[0], *lines[1:3], lines[3].replace("\t1003\t", "\tabc\t")]))
    with pytest.raises(UserError, match=r"photos\.csv: unreadable iNaturalist export file, column 'photo_id'"):
        inat(folder=broken)
    with pytest.raises(UserError, match="inat_taxa"):
        inat(classes=[{"name": "ice bear"}])


def test_attribution_style():
    assert attribution("A B", 1, "cc-by-nc-nd") == "(c) A B, some rights reserved (CC BY-NC-ND)"
    assert attribution(None, 7, None) == "(c) iNaturalist user 7, all rights reserved"


# -- folder tree -----------------------------------------------------------------------------

def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)


def test_folder_tree(tmp_path):
    root = tmp_path / "photos"
    _image(root / "Ice Bear" / "a.jpg")
    _image(root / "Ice Bear" / "b b.PNG")
    (root / "Ice Bear" / "notes.txt").write_text("not an image")
    _image(root / "130 flamingo" / "common-water" / "c.jpg")    # the official release layout
    _image(root / "loose.jpg")
    _image(root / ".cache" / "x.jpg")                            # hidden folders are not input
    cfg = make_cfg({"kind": "folder", "path": "photos", "license": "CC-BY", "attribution": "(c) me"})
    res = load_candidates(cfg, tmp_path)
    check_accounting(res)
    got = {r["source_id"]: r for r in res.table.to_pylist()}
    assert sorted(got) == ["130 flamingo/common-water/c.jpg", "Ice Bear/a.jpg", "Ice Bear/b b.PNG"]
    assert got["Ice Bear/a.jpg"]["class_idx"] == 296 and got["130 flamingo/common-water/c.jpg"]["class_idx"] == 130
    url = got["Ice Bear/b b.PNG"]["url"]
    assert url == "file://" + str(root / "Ice%20Bear" / "b%20b.PNG")   # percent-encoded, as fetch decodes it
    assert Path(url2pathname(url[len("file://"):])).read_bytes()[:4] == b"\x89PNG"
    assert got["Ice Bear/a.jpg"]["license"] == "cc-by" and got["Ice Bear/a.jpg"]["attribution"] == "(c) me"
    assert {(r["source_id"], r["reason"]) for r in res.rejected.to_pylist()} == {
        ("Ice Bear/notes.txt", "not_an_image"), ("loose.jpg", "outside_class_folder")}


def test_folder_unknown_class_folders_are_one_error(tmp_path):
    for name in ["ice bear", "zebra", "131 flamingo", "okapi"]:   # 131 is not flamingo's index
        _image(tmp_path / "t" / name / "x.jpg")
    with pytest.raises(UserError) as exc:
        load_candidates(make_cfg({"kind": "folder", "path": "t"}), tmp_path)
    msg = str(exc.value)
    assert "3 unknown class folders" in msg
    assert all(n in msg for n in ("'zebra'", "'okapi'", "'131 flamingo'"))
    with pytest.raises(UserError, match="no such folder"):
        load_candidates(make_cfg({"kind": "folder", "path": "nope"}), tmp_path)


def test_inat_homonyms_prefer_animals_and_ambiguity_is_an_error(tmp_path):
    # taxa.csv has a plant genus also named "Ursus": the animal genus is meant.
    res = inat(classes=[{"name": "bear", "inat_taxa": ["Ursus"]}])
    assert set(res.table.column("source_id").to_pylist()) == {"1001", "1002", "1003", "1006", "1008", "1013", "1018"}
    export = tmp_path / "export"
    shutil.copytree(INAT, export)
    with open(export / "taxa.csv", "a") as f:   # a second active animal taxon with the same name
        f.write("555555\t48460/1/2/355675/40151\t10\tspecies\tUrsus maritimus\ttrue\n")
    with pytest.raises(UserError, match=r"ice bear: 'Ursus maritimus' is taxa 41955, 555555.*numeric"):
        inat(folder=export)


def test_preset_fills_inat_taxa_for_paper_classes():
    from curation.presets import counteranimal, paper_inat_taxa, paper_pairs

    taxa = paper_inat_taxa()
    assert set(taxa) <= {r["imagenet_idx"] for r in paper_pairs()} and len(taxa) == 44
    by_idx = {c.imagenet_idx: c for c in counteranimal().classes}
    assert by_idx[296].inat_taxa == ["Ursus maritimus"] and by_idx[130].inat_taxa == ["Phoenicopteridae"]
    assert by_idx[30].inat_taxa == []          # documented gap: the bullfrog's current name
