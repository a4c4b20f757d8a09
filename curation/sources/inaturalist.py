"""The iNaturalist open-data export (https://github.com/inaturalist/inaturalist-open-data):
four tab-separated files without quoting — taxa, observations, photos, observers — each
``NAME.csv`` or ``NAME.csv.gz`` in one folder.

Selection, streamed so a tens-of-GB export never sits in memory:
1. taxa: each class's ``inat_taxa`` (scientific names or numeric ids) and all their descendants
   (through ``ancestry``); a taxon under two configured taxa belongs to the nearer one. A name
   matching several taxa prefers active ones, then those in Animalia; still several is an error.
2. observations: those of the selected taxa, read chunk by chunk.
3. photos: those of the selected observations, chunk by chunk; observers: the ones needed.
Every photo of a selected observation ends as a candidate or a reject: inactive_taxon (an
inactive descendant taxon), quality_grade, not_first_photo, missing_photo_id_or_extension, license,
duplicate_url.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from curation.config import ClassSpec, RunConfig
from curation.errors import UserError
from curation.sources.classes import ClassResolver
from curation.sources.common import Collector, normalize_license

SOURCE = "inaturalist"
BLOCK_SIZE = 16 << 20   # bytes per streamed chunk

# The published columns this reader uses (Metadata/README.md of inaturalist-open-data).
TAXA = {"taxon_id": pa.int64(), "ancestry": pa.string(), "name": pa.string(), "active": pa.string()}
OBSERVATIONS = {"observation_uuid": pa.string(), "taxon_id": pa.int64(), "quality_grade": pa.string()}
PHOTOS = {"photo_id": pa.int64(), "observation_uuid": pa.string(), "observer_id": pa.int64(),
          "extension": pa.string(), "license": pa.string(), "position": pa.int64()}
OBSERVERS = {"observer_id": pa.int64(), "login": pa.string(), "name": pa.string()}


def load(cfg: RunConfig, folder: Path):
    files = {name: export_file(folder, name) for name in ("taxa", "observations", "photos", "observers")}
    taxon_class, inactive = select_taxa(cfg, files["taxa"])
    observations = select_observations(files["observations"], taxon_class)
    photos = select_photos(files["photos"], observations["observation_uuid"])
    names = observer_names(files["observers"], pc.unique(photos["observer_id"].drop_null()))

    resolver = ClassResolver(cfg)
    obs_taxon = dict(zip(observations["observation_uuid"].to_pylist(), observations["taxon_id"].to_pylist()))
    obs_grade = dict(zip(observations["observation_uuid"].to_pylist(), observations["quality_grade"].to_pylist()))
    grades = set(cfg.source.quality_grades)
    spec = cfg.source
    out = Collector(SOURCE, cfg.license_allow)
    for photo_id, obs, observer, ext, raw_license, position in zip(
            *(photos[c].to_pylist() for c in PHOTOS)):
        taxon = obs_taxon[obs]
        c = taxon_class[taxon]
        ext = (ext or "").strip().lower()
        ok_ids = photo_id is not None and ext
        url = spec.photo_url_template.format(photo_id=photo_id, size=spec.photo_size, extension=ext) if ok_ids else None
        license = normalize_license(raw_license)
        sid = str(photo_id) if photo_id is not None else f"observation {obs}"
        why = ("inactive_taxon" if taxon in inactive
               else "quality_grade" if _grade(obs_grade[obs]) not in grades
               else "not_first_photo" if spec.first_photo_only and (position or 0) > 0
               else "missing_photo_id_or_extension" if not ok_ids
               else None)
        if why:
            out.reject(sid, why, url=url, class_name=c.name, license=license)
            continue
        out.add(url, resolver.index(c), c.name, sid, license, attribution(names.get(observer), observer, license),
                license_checked=True)
    return out.result()


def _grade(raw: str | None) -> str:
    """The export writes research / needs_id / casual; the site's labels map onto the same."""
    g = (raw or "").strip().lower().replace(" ", "_")
    return {"research_grade": "research"}.get(g, g)


def export_file(folder: Path, name: str) -> Path:
    if not folder.is_dir():
        raise UserError("no such folder; source.path must be the folder of the extracted iNaturalist export "
                        "(taxa.csv, observations.csv, photos.csv, observers.csv)", where=str(folder))
    for candidate in (folder / f"{name}.csv", folder / f"{name}.csv.gz"):
        if candidate.is_file():
            return candidate
    raise UserError(f"the iNaturalist export has no {name}.csv (or {name}.csv.gz)", where=str(folder))


# -- taxa ------------------------------------------------------------------------------------

def select_taxa(cfg: RunConfig, path: Path) -> tuple[dict[int, ClassSpec], set[int]]:
    """taxon_id -> class for every configured taxon and its descendants; and which of those
    are inactive descendants (their observations are rejected, not silently kept)."""
    wanted = [(c, t.strip()) for c in cfg.classes for t in c.inat_taxa if t.strip()]
    if not wanted:
        raise UserError("no class has inat_taxa; the inaturalist source selects photos by taxon",
                        where="config.yaml: classes[].inat_taxa",
                        hint="List scientific names or numeric iNaturalist taxon ids per class.")
    taxa = _filtered(path, TAXA, None).combine_chunks()   # ~1.5M rows, four columns: fits in memory
    if taxa.num_rows == 0:
        raise UserError("the taxa file has no rows", where=str(path))
    ids = taxa["taxon_id"].to_pylist()
    lowered = pc.utf8_lower(taxa["name"]).to_pylist()
    active = [str(a).strip().lower() in ("true", "t", "1") for a in taxa["active"].to_pylist()]
    by_name: dict[str, list[int]] = {}
    for row, name in enumerate(lowered):
        if name:
            by_name.setdefault(name.strip(), []).append(row)
    row_of = {tid: row for row, tid in enumerate(ids)}
    ancestries = taxa["ancestry"].to_pylist()
    animalia = {str(ids[r]) for r in by_name.get("animalia", []) if active[r]}

    chosen: dict[int, ClassSpec] = {}
    missing, ambiguous, clashes = [], [], []
    for c, t in wanted:
        if t.isdigit():
            rows = [row_of[int(t)]] if int(t) in row_of else []
        else:
            rows = by_name.get(t.casefold(), [])
            live = [r for r in rows if active[r]]
            rows = live or rows          # an inactive match only when no active taxon has the name
            if len(rows) > 1:            # a homonym (a genus name reused by a plant): animals first
                rows = [r for r in rows if _in_animalia(ancestries[r], animalia)] or rows
            if len(rows) > 1:
                ambiguous.append(f"{c.name}: {t!r} is taxa {', '.join(str(ids[r]) for r in rows)}")
                continue
        if not rows:
            missing.append(f"{c.name}: {t!r}")
            continue
        tid = ids[rows[0]]
        if tid in chosen and chosen[tid].name != c.name:
            clashes.append(f"taxon {tid} ({t!r}) in both {chosen[tid].name!r} and {c.name!r}")
        chosen[tid] = c
    if missing:
        raise UserError(f"{len(missing)} inat_taxa match no taxon in the export: {'; '.join(missing)}",
                        where=str(path), hint="Check the spelling (scientific names) or use numeric taxon ids.")
    if ambiguous or clashes:
        raise UserError("inat_taxa are ambiguous: " + "; ".join(ambiguous + clashes), where="config.yaml: classes",
                        hint="Name these taxa by their numeric iNaturalist taxon id instead.")

    # Descendants: any taxon whose ancestry passes through a chosen one.
    pattern = rf"(^|/)({'|'.join(str(t) for t in chosen)})(/|$)"
    under = pc.match_substring_regex(taxa["ancestry"].fill_null(""), pattern)
    rows = pc.indices_nonzero(pc.or_(under, pc.is_in(taxa["taxon_id"], pa.array(list(chosen), pa.int64()))))
    taxon_class, inactive = {}, set()
    for row in rows.to_pylist():
        tid = ids[row]
        chain = [int(a) for a in re.findall(r"\d+", ancestries[row] or "")] + [tid]
        nearest = next(a for a in reversed(chain) if a in chosen)
        taxon_class[tid] = chosen[nearest]
        if tid not in chosen and not active[row]:
            inactive.add(tid)
    return taxon_class, inactive


def _in_animalia(ancestry: str | None, animalia: set[str]) -> bool:
    return bool(animalia.intersection((ancestry or "").split("/")))


# -- observations, photos, observers: streamed -----------------------------------------------

def select_observations(path: Path, taxon_class: dict[int, ClassSpec]) -> pa.Table:
    taxa = pa.array(list(taxon_class), pa.int64())
    return _filtered(path, OBSERVATIONS, lambda b: pc.is_in(b["taxon_id"], taxa))


def select_photos(path: Path, observation_uuids: pa.ChunkedArray) -> pa.Table:
    uuids = observation_uuids.combine_chunks()
    return _filtered(path, PHOTOS, lambda b: pc.is_in(b["observation_uuid"], uuids))


def observer_names(path: Path, observer_ids: pa.Array) -> dict[int, str]:
    table = _filtered(path, OBSERVERS, lambda b: pc.is_in(b["observer_id"], observer_ids))
    names = {}
    for oid, login, name in zip(*(table[c].to_pylist() for c in OBSERVERS)):
        names[oid] = (name or "").strip() or (login or "").strip() or None
    return names


def _filtered(path: Path, columns: dict[str, pa.DataType], keep) -> pa.Table:
    parts = [batch.filter(keep(batch)) if keep else batch for batch in stream(path, columns)]
    schema = pa.schema([(n, t) for n, t in columns.items()])
    return pa.Table.from_batches([p for p in parts if p.num_rows], schema=schema)


def stream(path: Path, columns: dict[str, pa.DataType]):
    """Record batches of the named columns only; errors name the file (and column)."""
    header = _header(path)
    absent = [c for c in columns if c not in header]
    if absent:
        raise UserError(f"missing column{'s' if len(absent) > 1 else ''} {', '.join(repr(c) for c in absent)} "
                        f"(has: {', '.join(header)}); is this the published tab-separated export?", where=str(path))
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=BLOCK_SIZE),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(include_columns=list(columns), column_types=columns),
        )
        for batch in reader:
            yield batch
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError) as exc:
        message = str(exc).strip().splitlines()[0][:300]
        column = next((c for c in columns if f"column #{list(header).index(c)}" in message), None)
        where = f", column '{column}'" if column else ""
        line = _first_bad_line(path, header, columns)
        if line:
            raise UserError(f"unreadable iNaturalist export file{where}: {line}", where=str(path)) from None
        raise UserError(f"unreadable iNaturalist export file{where}: {message}", where=str(path)) from None


def _first_bad_line(path: Path, header: list[str], columns: dict[str, pa.DataType]) -> str | None:
    """The first line with the wrong number of fields or a non-number where a number belongs
    (only after the fast reader failed, so a user can find the row)."""
    numeric = [(header.index(c), c) for c, t in columns.items() if pa.types.is_integer(t)]
    try:
        with pa.input_stream(str(path), compression="detect") as f:
            for n, text in enumerate(io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline="\n"), 1):
                if n == 1:
                    continue
                fields = text.rstrip("\r\n").split("\t")
                if fields == [""]:
                    continue
                if len(fields) != len(header):
                    return (f"line {n} has {len(fields)} tab-separated fields, the header has {len(header)} "
                            "(a stray tab, or a file cut short?)")
                for i, name in numeric:
                    value = fields[i].strip()
                    if value and not value.lstrip("-").isdigit():
                        return f"line {n}: {value[:40]!r} in column '{name}' is not a number"
    except (OSError, pa.ArrowInvalid):
        return None
    return None


def _header(path: Path) -> list[str]:
    try:
        with pa.input_stream(str(path), compression="detect") as f:
            first = f.read(1 << 16).split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")
    except (OSError, UnicodeDecodeError, pa.ArrowInvalid) as exc:
        raise UserError(f"unreadable iNaturalist export file: {exc}", where=str(path)) from None
    if not first.strip():
        raise UserError("empty file; expected a tab-separated header line", where=str(path))
    return first.split("\t")


# -- attribution in iNaturalist's own style -------------------------------------------------

def license_label(license: str | None) -> str | None:
    """cc-by-nc-sa -> "CC BY-NC-SA", cc0 -> "CC0" (as iNaturalist prints them)."""
    if not license:
        return None
    if license.startswith("cc-"):
        return "CC " + license[3:].upper()
    return license.upper()


def attribution(name: str | None, observer_id: int | None, license: str | None) -> str:
    """"(c) Jane Doe, some rights reserved (CC BY-NC)" — the photographer's name, else login."""
    who = name or (f"iNaturalist user {observer_id}" if observer_id is not None else "unknown iNaturalist user")
    if license in ("cc0", "pd"):
        return f"(c) {who}, no rights reserved ({license_label(license)})"
    label = license_label(license)
    return f"(c) {who}, some rights reserved ({label})" if label else f"(c) {who}, all rights reserved"
