"""Release writing as plain functions: which photos, their records, deterministic shards, the folder.

    plan()            proposals + groups + samples + candidates → the photos to release, per split,
                      each assigned to an output shard (sorted keys, contiguous, balanced)
    sample_record()   one photo's JSON record (written into the shard and into metadata.parquet)
    write_tar()       a shard whose bytes depend only on its samples (fixed mtime/uid/gid/mode,
                      sorted members, no gzip)
    finish_files()    classnames, templates, 1-vs-k sets, metadata, card, Croissant, SHA256SUMS
    publish()         the whole temp folder renamed onto RUN/release/NAME-VERSION

The names of the folder's files live in curation/release_layout.py; pipeline/release.py runs the
reading and shard writing as a Beam pipeline.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc

import schemas
from curation import atomic, storage
from curation import release_layout as layout
from curation.config import RunConfig
from curation.run_paths import RunPaths
from curation.errors import UserError
from curation.label_space import label_names, true_labels  # noqa: F401  (release.label_names: classnames.txt)
from curation.sources.common import normalize_license

# Fixed tar member metadata: a re-release of the same photos gives the same bytes.
TAR_MTIME = 946684800          # 2000-01-01T00:00:00Z
TAR_MODE = 0o644
DEFAULT_MAX_SHARD_BYTES = 256 * 2**20

# Record fields in the order the card and metadata describe them.
RECORD_FIELDS = ("uid", "class_idx", "class_name", "background", "group", "url", "source", "source_id",
                 "license", "attribution", "sha256", "verified", "model_id")


@dataclass(frozen=True)
class Pair:
    class_idx: int           # as stored on the run's samples
    label: int               # index into classnames.txt
    class_name: str
    common: str
    counter: str
    row: dict                # the proposals row, every column it has


@dataclass
class Photo:
    uid: str
    key: str
    group: str               # common | counter
    class_idx: int           # run class index
    label: int               # index into classnames.txt
    class_name: str
    background: str
    url: str | None
    source: str | None
    source_id: str | None
    license: str | None
    attribution: str | None
    verified: str            # human | model
    model_id: str | None
    in_shard: str            # the run's shard holding the stored bytes, e.g. 00003.tar
    in_key: str              # its key there
    bytes: int | None
    width: int | None
    height: int | None
    flags: list[str] = field(default_factory=list)
    out_shard: int = -1


# Arrow types of the photos file where a column could be all nulls (from_pylist would guess null).
PHOTO_TYPES = {"url": pa.string(), "source": pa.string(), "source_id": pa.string(), "license": pa.string(),
               "attribution": pa.string(), "model_id": pa.string(), "bytes": pa.int64(), "width": pa.int32(),
               "height": pa.int32(), "flags": pa.list_(pa.string())}


@dataclass
class Plan:
    verified: bool
    decision_model: str
    pairs: list[Pair]
    photos: dict[str, list[Photo]]            # split → photos sorted by key
    nshards: dict[str, int]
    excluded: list[dict]                      # uid, class_name, group, license, reason
    label_names: list[str]
    templates: list[str]
    left_out_unsure: int = 0

    def shards(self) -> dict[tuple[str, int], list[Photo]]:
        out: dict[tuple[str, int], list[Photo]] = {}
        for split, photos in self.photos.items():
            for p in photos:
                out.setdefault((split, p.out_shard), []).append(p)
        return out

    def input_shards(self) -> list[str]:
        return sorted({p.in_shard for photos in self.photos.values() for p in photos})

    def summary(self) -> "Plan":
        """The plan without its photos: what the card needs, small enough to ship to a worker."""
        return dataclasses.replace(self, photos={s: [] for s in self.photos})


def write_photos(plan: Plan, path: str | os.PathLike) -> None:
    """The plan's photos as a parquet file the workers read (instead of pickling thousands into the job)."""
    photos = [p for ps in plan.photos.values() for p in ps]
    columns = {f.name: [getattr(p, f.name) for p in photos] for f in dataclasses.fields(Photo)}   # not asdict(): it deep-copies
    atomic.write_parquet(path, pa.table({n: pa.array(v, type=PHOTO_TYPES.get(n)) for n, v in columns.items()}))


def read_photos(path: str | os.PathLike, in_shard: str) -> list[Photo]:
    """The photos stored in one run shard, as write_photos wrote them (the file is read once per process)."""
    return _photos(storage.path(path))[0].get(in_shard, [])


def photos_by_key(path: str | os.PathLike) -> dict[str, Photo]:
    """Every photo of the plan by its release key (the writers look records up by key)."""
    return _photos(storage.path(path))[1]


@functools.lru_cache(maxsize=2)
def _photos(path) -> tuple[dict[str, list[Photo]], dict[str, Photo]]:
    columns = storage.read_table(path).to_pydict()
    names = list(columns)
    by_shard: dict[str, list[Photo]] = {}
    by_key: dict[str, Photo] = {}
    for values in zip(*(columns[n] for n in names)):
        p = Photo(**dict(zip(names, values)))
        by_shard.setdefault(p.in_shard, []).append(p)
        by_key[p.key] = p
    return by_shard, by_key


# -- selection ---------------------------------------------------------------------------------------

def decision_model(cfg: RunConfig) -> str:
    """The model id whose proposals rows decide (the consensus row 'all' when all models must agree)."""
    if len(cfg.models) > 1 and cfg.thresholds.require_all_models:
        return "all"
    return cfg.models[0].model_id


def reference_model(cfg: RunConfig) -> str:
    """The model whose "1 vs k" label sets ship with the release."""
    return cfg.models[0].model_id


def read_proposals(run: Path) -> list[dict]:
    """Every proposals row with every column it has (later schema versions add columns the card shows)."""
    path = RunPaths(run).proposals
    if not path.exists():
        raise UserError("no proposals to release", where=str(path), hint="Run `counteranimal curate RUN` first.")
    try:
        raw = storage.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise UserError(f"not a readable parquet file ({exc})", where=str(path)) from None
    schemas.conform(raw, "proposals", str(path))     # the required columns are there and well typed
    return raw.to_pylist()


def kept_pairs(rows: list[dict], cfg: RunConfig, verified: bool, labels: dict[int, int]) -> list[Pair]:
    source = "model" if not verified else "human"
    model = decision_model(cfg)
    pairs = []
    for r in rows:
        if r["source"] != source or r["model_id"] != model or r["decision"] != "kept":
            continue
        if not r.get("common") or not r.get("counter"):
            continue
        if r["class_idx"] not in labels:
            raise UserError(f"class_idx {r['class_idx']} ({r['class_name']}) is not one of the config's classes",
                            where="proposals.parquet")
        pairs.append(Pair(r["class_idx"], labels[r["class_idx"]], r["class_name"], r["common"], r["counter"], r))
    return sorted(pairs, key=lambda p: p.label)


def clip_templates(cfg: RunConfig) -> list[str]:
    """zeroshot_classification_templates.txt: the class prompts with '{c}' (clip_benchmark's slot)."""
    if cfg.prompts.ensemble == "openai":
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        return [t("{c}") for t in OPENAI_IMAGENET_TEMPLATES]
    return [t.replace("{}", "{c}") for t in cfg.prompts.classes]


def plan(run: str | os.PathLike, cfg: RunConfig, *, verified: bool = True,
         max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Plan:
    """Which photos the release holds, each with its group and output shard."""
    run = storage.path(run)
    labels = true_labels(cfg)
    pairs = kept_pairs(read_proposals(run), cfg, verified, labels)
    if not pairs:
        if verified:
            raise UserError("no verified pair is kept: proposals.parquet has no 'human' row with decision 'kept' "
                            f"for model {decision_model(cfg)!r}", where=str(RunPaths(run).proposals),
                            hint="Verify photos first (`counteranimal annotate push|pull RUN`), or release the "
                                 "model's pairs with --unverified.")
        raise UserError(f"no pair is kept for model {decision_model(cfg)!r}", where=str(RunPaths(run).proposals),
                        hint="Nothing to release: see `counteranimal report RUN` for why each class was dropped.")
    groups = schemas.read_folder(RunPaths(run).groups, "groups")
    is_human = pc.equal(groups.column("method"), "human")
    left_out = 0
    if verified:
        groups = groups.filter(is_human)
        if groups.num_rows == 0:
            raise UserError("no human-verified groups", where=str(RunPaths(run).groups / "human.parquet"),
                            hint="Run `counteranimal annotate pull RUN` first, or pass --unverified.")
    else:
        groups = groups.filter(pc.invert(is_human))
        floor = cfg.thresholds.min_background_confidence
        if floor > 0:   # the propose stage counted only confident photos; release the same ones
            sure = groups.filter(pc.greater_equal(pc.fill_null(groups.column("confidence"), 0.0), floor))
            left_out, groups = groups.num_rows - sure.num_rows, sure
    # Only the kept pairs' two groups matter: filter in Arrow before any row becomes a Python dict.
    in_pairs = None
    for p in pairs:
        m = pc.and_(pc.equal(groups.column("class_idx"), p.class_idx),
                    pc.is_in(groups.column("background"), pa.array([p.common, p.counter])))
        in_pairs = m if in_pairs is None else pc.or_(in_pairs, m)
    groups = groups.filter(in_pairs)
    uids = pc.unique(groups.column("uid"))
    samples = _rows_by_uid(schemas.read_folder(RunPaths(run).samples, "samples"), uids,
                           ["uid", "status", "reason", "shard", "key", "bytes", "width", "height", "flags"])
    candidates = _rows_by_uid(schemas.read_folder(RunPaths(run).candidates_folder, "candidates"), uids,
                              ["uid", "url", "source", "source_id", "license", "attribution"])
    allow = {normalize_license(x) for x in cfg.license_allow}   # as the sources stage compares them
    by_class = {p.class_idx: p for p in pairs}
    photos: dict[str, list[Photo]] = {s: [] for s in layout.SPLITS}
    excluded, seen = [], set()
    for g in sorted(groups.to_pylist(), key=lambda g: g["uid"]):
        pair = by_class.get(g["class_idx"])
        if pair is None or g["uid"] in seen:
            continue
        group = "common" if g["background"] == pair.common else "counter" if g["background"] == pair.counter else None
        if group is None:
            continue
        seen.add(g["uid"])
        s, c = samples.get(g["uid"]), candidates.get(g["uid"]) or {}
        lic = normalize_license(c.get("license"))
        base = dict(uid=g["uid"], class_name=pair.class_name, group=group, license=lic)
        if s is None or s["status"] != "ok" or not s["shard"]:
            excluded.append(dict(base, reason=f"not a clean photo ({(s or {}).get('reason') or 'no sample row'})"))
            continue
        if lic is None:
            excluded.append(dict(base, reason="no license recorded (set source.license for sources without one)"))
            continue
        if lic not in allow:
            excluded.append(dict(base, reason=f"license {lic} is not in license_allow"))
            continue
        photos[group].append(Photo(
            uid=g["uid"], key=layout.sample_key(g["uid"]), group=group, class_idx=pair.class_idx, label=pair.label,
            class_name=pair.class_name, background=g["background"], url=c.get("url"), source=c.get("source"),
            source_id=c.get("source_id"), license=lic, attribution=c.get("attribution"),
            verified="human" if verified else "model",
            model_id=pair.row.get("model_id") if pair.row.get("model_id") != "all" else None,
            in_shard=s["shard"], in_key=s["key"] or s["uid"], bytes=s["bytes"], width=s["width"],
            height=s["height"], flags=list(s["flags"] or [])))
    keys = Counter(p.key for ps in photos.values() for p in ps)
    clash = sorted(k for k, n in keys.items() if n > 1)
    if clash:
        raise UserError(f"uids map to the same sample key {clash[0]!r}", where=str(RunPaths(run).samples))
    nshards = {}
    for split in layout.SPLITS:
        photos[split].sort(key=lambda p: p.key)
        if not photos[split]:
            raise UserError(f"no photo is left for the {split} split of the kept pairs "
                            f"({len(excluded)} excluded: {', '.join(sorted({e['reason'] for e in excluded})) or 'none'})",
                            where=str(run))
        nshards[split] = shard_count(len(photos[split]), sum(p.bytes or 0 for p in photos[split]), max_shard_bytes)
        assign_shards(photos[split], nshards[split])
    return Plan(verified=verified, decision_model=decision_model(cfg), pairs=pairs, photos=photos,
                nshards=nshards, excluded=excluded, label_names=label_names(cfg), templates=clip_templates(cfg),
                left_out_unsure=left_out)


def _rows_by_uid(table: pa.Table, uids: pa.Array, columns: list[str]) -> dict[str, dict]:
    table = table.select(columns).filter(pc.is_in(table.column("uid"), uids))
    return {r["uid"]: r for r in table.to_pylist()}


def shard_count(n_photos: int, n_bytes: int, max_shard_bytes: int) -> int:
    """At least MIN_SHARDS (clip_benchmark's default workers) when there are that many photos, more when
    shards would exceed max_shard_bytes, never more shards than photos."""
    by_size = max(1, math.ceil(n_bytes / max_shard_bytes))
    return max(1, min(n_photos, max(layout.MIN_SHARDS, by_size)))


def assign_shards(photos: list[Photo], n: int) -> None:
    """Contiguous runs of the sorted keys, as equal in count as they can be."""
    total = len(photos)
    for i in range(n):
        for p in photos[i * total // n:(i + 1) * total // n]:
            p.out_shard = i


# -- records and shards -----------------------------------------------------------------------------

def image_ext(parts: dict[str, bytes]) -> tuple[str, bytes] | None:
    """The stored image and its extension (jpeg → jpg), as fetched."""
    for ext in ("jpg", "jpeg", "webp", "png"):
        if ext in parts:
            return ("jpg" if ext == "jpeg" else ext), parts[ext]
    return None


def sample_record(photo: Photo, sha256: str) -> dict:
    return dict(uid=photo.uid, class_idx=photo.label, class_name=photo.class_name, background=photo.background,
                group=photo.group, url=photo.url, source=photo.source, source_id=photo.source_id,
                license=photo.license, attribution=photo.attribution, sha256=sha256, verified=photo.verified,
                model_id=photo.model_id)


def record_json(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sample_members(key: str, ext: str, image: bytes, label: int, record: dict) -> dict[str, bytes]:
    return {ext: image, layout.CLS: str(int(label)).encode("ascii"), layout.JSON: record_json(record)}


def write_tar(path: str | os.PathLike, samples: Iterable[tuple[str, dict[str, bytes]]]) -> tuple[str, int]:
    """Write (key, {ext: bytes}) samples as an uncompressed tar, keys and members sorted, fixed member
    metadata; returns (sha256, size) of the file.

    The bytes are those tarfile writes in GNU format (Python 3.11; tests/test_release.py compares them),
    each header built here from one template: tarfile's per-member TarInfo copy and field encoding
    took about a third of a small release's time (bench/RESULTS.md, "release")."""
    digest, size = hashlib.sha256(), 0
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:   # an upload once whole, for an object store
        def put(b: bytes) -> None:
            digest.update(b)
            f.write(b)

        for key, parts in sorted(samples, key=lambda s: s[0]):
            for ext in sorted(parts):
                data, header = parts[ext], member_header(f"{key}.{ext}", len(parts[ext]))
                put(header)
                put(data)
                size += len(header) + len(data)
                if len(data) % tarfile.BLOCKSIZE:
                    pad = tarfile.BLOCKSIZE - len(data) % tarfile.BLOCKSIZE
                    put(bytes(pad))
                    size += pad
        end = 2 * tarfile.BLOCKSIZE   # the end-of-archive blocks, then zeros up to a whole record (as tarfile)
        end += -(size + end) % tarfile.RECORDSIZE
        put(bytes(end))
        size += end
    return digest.hexdigest(), size


# A GNU tar header with the release's fixed metadata (mode 0644, uid/gid 0, no user names, regular
# file, TAR_MTIME); name, size and checksum are filled in per member.
_HEADER_HEAD = b"%07o\0%07o\0%07o\0" % (TAR_MODE, 0, 0)                                  # bytes 100-124
_HEADER_TAIL = (b"%011o\0" % TAR_MTIME + b" " * 8 + tarfile.REGTYPE + bytes(100) + tarfile.GNU_MAGIC
                + bytes(tarfile.BLOCKSIZE - 265))                                       # bytes 136-512
_HEADER_SUM = sum(_HEADER_HEAD) + sum(_HEADER_TAIL)


def member_header(name: str, size: int) -> bytes:
    """The header tarfile writes for a regular member ``name`` of ``size`` bytes with the fixed metadata
    (GNU format): one 512-byte block, built here; names over 100 bytes (a GNU long-name header first)
    and sizes from 8 GiB take tarfile's own encoding."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > 100 or size >= 8 ** 11:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, TAR_MTIME, TAR_MODE, 0, 0, "", ""
        return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    size_field = b"%011o\0" % size
    checksum = _HEADER_SUM + sum(raw) + sum(size_field)   # the byte sum, its own field counted as spaces
    return b"".join((raw, bytes(100 - len(raw)), _HEADER_HEAD, size_field, _HEADER_TAIL[:12], b"%06o\0" % checksum,
                     _HEADER_TAIL[19:]))


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with storage.path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- the other files ----------------------------------------------------------------------------------

def metadata_table(records: list[dict]) -> pa.Table:
    rows = sorted(records, key=lambda r: (r["group"], r["key"]))
    return schemas.conform(pa.Table.from_pylist(rows), "release_metadata", "release metadata")


def write_checksums(folder: Path, known: dict[str, str] | None = None) -> str:
    """SHA256SUMS in sha256sum's format ('<hex>  <path>'), over every other file, sorted. ``known``: digests
    already computed (relative path → hex), e.g. the shards' from write_tar."""
    known = known or {}
    lines = [f"{known.get(rel) or sha256_file(folder / rel)}  {rel}\n" for rel in layout.relative_files(folder)]
    text = "".join(lines)
    (folder / layout.CHECKSUMS).write_text(text)
    return text


def write_lines(path: Path, lines: Iterable[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


# -- the folder ---------------------------------------------------------------------------------------

def temp_folder(final: Path) -> Path:
    """An empty folder beside ``final`` (same file system, so publish() is a rename)."""
    if storage.is_url(final):
        for stale in final.parent.glob(f".{final.name}.*.tmp"):   # left by a killed release
            storage.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
        return final.parent / f".{final.name}.{os.urandom(4).hex()}.tmp"
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.*.tmp"):   # left by a killed release
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))


def publish(tmp: Path, final: Path) -> None:
    """Make ``tmp`` the release: the old one (if any) is renamed away first, then removed.

    An object store has no folder rename: the old release's objects are removed, the new ones
    copied into place inside the store, SHA256SUMS last, so a reader that starts from SHA256SUMS
    (``download`` does) never finds a release without it."""
    if storage.is_url(final):
        storage.rmtree(final)
        objects = sorted(tmp.rglob("*"), key=lambda p: (p.name == layout.CHECKSUMS, str(p)))
        for p in objects:
            p.fs.copy(p.key, (final / p.relative_to(tmp).as_posix()).key)
        storage.rmtree(tmp)
        return
    os.chmod(tmp, 0o777 & ~atomic._UMASK)
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}.tmp"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def verify_checksums(folder: str | os.PathLike) -> list[str]:
    """Files whose sha256 differs from SHA256SUMS, or that it lists and are missing; [] when whole."""
    folder = storage.path(folder)
    bad = []
    for line in (folder / layout.CHECKSUMS).read_text().splitlines():
        digest, rel = line.split("  ", 1)
        p = folder / rel
        if not p.is_file() or sha256_file(p) != digest:
            bad.append(rel)
    return bad
