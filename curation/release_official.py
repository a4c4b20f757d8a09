"""The official CounterAnimal folder layout, both ways.

    export:  release  → DIR/imagenet_names.txt (idx<TAB>name, the release's whole label space)
                        DIR/TOP/<idx> <name>/common-<bg>/<key>.<ext>
                        DIR/TOP/<idx> <name>/counter-<bg>/<key>.<ext>
    import:  that layout (DIR or DIR/TOP, imagenet_names.txt beside the class folders or one level up)
             → a release folder of ours, so the official data can be evaluated by `counteranimal evaluate`

The class folder's name is the paper's name for the paper's 45 classes (curation/data/
counteranimal_pairs.csv), otherwise the label's name; the index is the class's index in classnames.txt
(the ImageNet index for label_space imagenet1k). Photos are the stored bytes, unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm

from curation import release, release_layout as layout
from curation.errors import UserError

NAMES = "imagenet_names.txt"
CLASS_DIR = re.compile(r"^(\d+)[ _](.+)$")
GROUP_DIR = re.compile(r"^(common|counter)-(.+)$")
IMAGE_SUFFIXES = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}
OFFICIAL_TEMPLATES = ["A photo of {c}."]     # the paper's prompt; the official archive ships none


def paper_names() -> dict[int, str]:
    from curation.presets import paper_pairs

    return {r["imagenet_idx"]: r["paper_name"] for r in paper_pairs()}


def _safe(name: str) -> str:
    return name.replace("/", "-").replace(os.sep, "-").strip() or "unnamed"


def iter_release(release_dir: Path, split: str):
    """(key, image extension, image bytes, json record) per sample of one split of our release."""
    from curation import shard_reader

    for path in layout.shard_paths(release_dir, split):
        with open(path, "rb") as f:
            for key, parts in shard_reader.iter_samples(f):
                image = release.image_ext(parts)
                if image is None or layout.JSON not in parts:
                    raise UserError(f"sample {key} has no image or no json", where=str(path))
                yield key, image[0], image[1], json.loads(parts[layout.JSON])


def _replaceable(out: Path, marker: str, what: str) -> None:
    """An existing ``out`` is replaced only when it is what we write (it has ``marker``) or empty: never a
    folder of the user's that happens to be named."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).is_file())):
        raise UserError(f"exists and is not {what} (no {marker}); refusing to replace it", where=str(out),
                        hint="Name a new folder, or remove this one yourself.")


# -- export --------------------------------------------------------------------------------------

def export(release_dir: str | os.PathLike, out: str | os.PathLike, top: str | None = None,
           label_space_is_imagenet: bool | None = None) -> Path:
    """Write the release's photos in the official layout under ``out`` (atomically: a temp folder, renamed)."""
    release_dir, out = Path(release_dir), Path(out)
    classnames = (release_dir / layout.CLASSNAMES).read_text().splitlines()
    imagenet = len(classnames) == 1000 if label_space_is_imagenet is None else label_space_is_imagenet
    names = paper_names() if imagenet else {}
    top = top or release_dir.name
    _replaceable(out, NAMES, "an official-layout export")
    tmp = release.temp_folder(out)
    bar = tqdm(total=_count(release_dir), unit="photo", desc="export", leave=False)
    try:
        for split in layout.SPLITS:
            for key, ext, data, rec in iter_release(release_dir, split):
                bar.update()
                idx = int(rec["class_idx"])
                cls_dir = f"{idx} {_safe(names.get(idx, classnames[idx]))}"
                folder = tmp / top / cls_dir / f"{split}-{_safe(rec['background'])}"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{key}.{ext}").write_bytes(data)
        release.write_lines(tmp / NAMES, [f"{i}\t{n}" for i, n in enumerate(classnames)])
        release.publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    return out


def _count(release_dir: Path) -> int | None:
    try:
        return pq.read_metadata(release_dir / layout.METADATA).num_rows
    except (OSError, ValueError):
        return None


# -- import --------------------------------------------------------------------------------------

def find_top(src: Path) -> tuple[Path, Path | None]:
    """(the folder holding the class folders, the imagenet_names.txt beside them or one level up)."""
    if not src.is_dir():
        raise UserError("no such folder", where=str(src))
    if any(CLASS_DIR.match(p.name) and p.is_dir() for p in src.iterdir()):
        top = src
    else:
        tops = [p for p in sorted(src.iterdir()) if p.is_dir()
                and any(CLASS_DIR.match(q.name) and q.is_dir() for q in p.iterdir())]
        if len(tops) != 1:
            raise UserError("is not in the official CounterAnimal layout: expected '<imagenet idx> <name>/"
                            "common-<bg>/' folders here or in exactly one folder below "
                            f"(found {len(tops)} such folders)", where=str(src))
        top = tops[0]
    for cand in (top / NAMES, top.parent / NAMES):
        if cand.is_file():
            return top, cand
    return top, None


def read_names(path: Path) -> dict[int, str]:
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t", 1) if "\t" in line else line.split(None, 1)
        if len(parts) != 2 or not parts[0].strip().isdigit():
            raise UserError(f"line {n}: expected '<index><TAB><name>', found {line[:60]!r}", where=str(path))
        out[int(parts[0])] = parts[1].strip()
    return out


def scan(src: str | os.PathLike) -> tuple[list[dict], list[str], Path]:
    """Photos of the official layout: (records without sha256, classnames, top folder)."""
    top, names_file = find_top(Path(src))
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    names = dict(enumerate(IMAGENET_CLASSNAMES))
    if names_file is not None:
        given = read_names(names_file)
        names = given if max(given) >= len(IMAGENET_CLASSNAMES) or len(given) != len(names) else {**names, **given}
    photos = []
    for cls_dir in sorted(p for p in top.iterdir() if p.is_dir()):
        m = CLASS_DIR.match(cls_dir.name)
        if not m:
            raise UserError("a class folder must be named '<index> <name>'", where=str(cls_dir))
        idx = int(m.group(1))
        if idx not in names:
            raise UserError(f"class index {idx} is not in the label space ({len(names)} names"
                            f"{' from ' + str(names_file) if names_file else ''})", where=str(cls_dir))
        for group_dir in sorted(p for p in cls_dir.iterdir() if p.is_dir()):
            g = GROUP_DIR.match(group_dir.name)
            if not g:
                raise UserError("a group folder must be named 'common-<background>' or 'counter-<background>'",
                                where=str(group_dir))
            for f in sorted(group_dir.iterdir()):
                ext = IMAGE_SUFFIXES.get(f.suffix.lower())
                if not f.is_file() or ext is None:
                    continue
                photos.append(dict(path=f, rel=f.relative_to(top).as_posix(), ext=ext, class_idx=idx,
                                   class_name=names[idx], group=g.group(1), background=g.group(2)))
    if not photos:
        raise UserError("no photos found in the class folders", where=str(top))
    n_labels = max(names) + 1
    classnames = [names.get(i, f"class {i}") for i in range(n_labels)]
    return photos, classnames, top


def _keys(photos: list[dict]) -> list[str]:
    """The file's stem when every stem is a unique key (a round trip of our export), else one from its path."""
    stems = [layout.sample_key(Path(p["rel"]).stem) for p in photos]
    if len(set(stems)) == len(stems) and all(s == Path(p["rel"]).stem for s, p in zip(stems, photos)):
        return stems
    return [hashlib.sha256(p["rel"].encode("utf-8")).hexdigest()[:32] for p in photos]


def import_official(src: str | os.PathLike, out: str | os.PathLike, *, name: str = "counteranimal-official",
                    version: str = "1", templates: list[str] | None = None,
                    max_shard_bytes: int = release.DEFAULT_MAX_SHARD_BYTES) -> Path:
    """Write a release folder of ours from the official layout (card, checksums and all)."""
    from curation import card, croissant

    photos, classnames, top = scan(src)
    out = Path(out)
    _replaceable(out, layout.CHECKSUMS, "a release")
    tmp = release.temp_folder(out)
    bar = tqdm(total=len(photos), unit="photo", desc="import", leave=False)
    try:
        keys = _keys(photos)
        records_by_split: dict[str, list] = {s: [] for s in layout.SPLITS}
        for p, key in zip(photos, keys):
            records_by_split[p["group"]].append((key, p))
        records, nshards = [], {}
        for split in layout.SPLITS:
            items = sorted(records_by_split[split], key=lambda kp: kp[0])
            if not items:
                raise UserError(f"no {split}-<background> folder has photos", where=str(top))
            n = release.shard_count(len(items), sum(kp[1]["path"].stat().st_size for kp in items), max_shard_bytes)
            nshards[split] = n
            (tmp / split).mkdir(parents=True)
            for i in range(n):
                samples = []
                for key, p in items[i * len(items) // n:(i + 1) * len(items) // n]:
                    data = p["path"].read_bytes()
                    bar.update()
                    rec = dict(uid=key, class_idx=p["class_idx"], class_name=p["class_name"],
                               background=p["background"], group=split, url=None, source="counteranimal-official",
                               source_id=p["rel"], license=None, attribution=None,
                               sha256=hashlib.sha256(data).hexdigest(), verified="human", model_id=None)
                    samples.append((key, release.sample_members(key, p["ext"], data, p["class_idx"], rec)))
                    records.append(dict(rec, key=key, shard=f"{split}/{layout.shard_name(i)}", image_ext=p["ext"],
                                        bytes=len(data), width=None, height=None, run_class_idx=None, flags=[]))
                release.write_tar(tmp / split / layout.shard_name(i), samples)
            (tmp / split / layout.NSHARDS).write_text(f"{n}\n")
        release.write_lines(tmp / layout.CLASSNAMES, classnames)
        release.write_lines(tmp / layout.TEMPLATES, templates or OFFICIAL_TEMPLATES)
        table = release.metadata_table(records)
        pq.write_table(table, tmp / layout.METADATA)
        ctx = imported_context(table, classnames, templates or OFFICIAL_TEMPLATES, name, version, nshards, top)
        (tmp / layout.CARD).write_text(card.render(ctx, "card_official.md.j2"))
        (tmp / layout.CROISSANT).write_text(croissant.dumps(croissant.build(tmp, ctx)))
        release.write_checksums(tmp)
        release.publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    return out


def imported_context(table, classnames, templates, name, version, nshards, top) -> dict:
    rows = table.to_pylist()
    per = Counter((r["class_idx"], r["class_name"], r["group"], r["background"]) for r in rows)
    classes: dict[int, dict] = {}
    for (idx, cname, group, bg), n in sorted(per.items()):
        c = classes.setdefault(idx, dict(label=idx, class_name=cname, common=0, counter=0, common_bg=[], counter_bg=[]))
        c[group] += n
        c[f"{group}_bg"].append(bg)
    counts = [dict(c, common_bg=", ".join(c["common_bg"]), counter_bg=", ".join(c["counter_bg"]))
              for _, c in sorted(classes.items())]
    from curation import card

    return dict(name=name, version=version, release=layout.release_name(name, version), verified=True,
                source=str(top), n_photos=len(rows), n_classes=len(classes), n_labels=len(classnames),
                n_split={s: sum(1 for r in rows if r["group"] == s) for s in layout.SPLITS},
                nshards=nshards, splits=list(layout.SPLITS), counts=counts, templates=list(templates),
                licenses=[(None, len(rows))], size_category=card.size_category(len(rows)),
                files=dict(classnames=layout.CLASSNAMES, templates=layout.TEMPLATES, metadata=layout.METADATA,
                           checksums=layout.CHECKSUMS, croissant=layout.CROISSANT, nshards=layout.NSHARDS))
