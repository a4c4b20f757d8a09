"""Read a CounterAnimal-style dataset folder, in either layout, as plain samples per split.

This is the one place a release is read (evaluate, the release's own tests, anything else).

    ds = open_dataset("RUN/release/planted-world-1.0")   # or the official folder (e.g. LAION-final/)
    ds.layout                  "release" (ours) or "official"
    ds.classnames              the label space (index -> name): classnames.txt, or the 1,000 ImageNet names
    ds.templates               zero-shot templates with {c}
    ds.one_vs_k                {label index: [k label indices]} shipped with the release, or None
    for s in ds.samples("counter"): s.image, s.label, s.class_name, s.group, s.background, s.key

Layouts:
- ours (curation/release_layout.py): ``common/`` and ``counter/``, each ``nshards.txt`` and
  ``0.tar … (n-1).tar`` WebDataset shards of ``KEY.jpg|webp``, ``KEY.cls`` (index into
  classnames.txt) and ``KEY.json`` (class, background, group, license, …).
- the official CounterAnimal archive: ``<top>/<imagenet idx> <name>/common-<bg>/*.jpg`` and
  ``counter-<bg>/…``, with ``imagenet_names.txt`` (``idx<TAB>name``) beside the class folders or
  one level up; without it the label space is open_clip's 1,000 ImageNet class names. Its prompt is
  the paper's, "A photo of {c}.", unless a zeroshot_classification_templates.txt lies there too.

Local folders only; `counteranimal evaluate` downloads a URL into a cache folder first.
"""
from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from curation import release_layout as layout
from curation import shard_reader
from curation.errors import UserError

RELEASE, OFFICIAL = "release", "official"
OFFICIAL_NAMES = "imagenet_names.txt"
# The paper's prompt (design notes: "A photo of <label>."), for the official layout, which ships none.
OFFICIAL_TEMPLATES = ("A photo of {c}.",)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_CLASS_DIR = re.compile(r"^(\d+)[ _](.+)$")
_GROUP_DIR = re.compile(r"^(common|counter)-(.+)$")


@dataclass(frozen=True)
class Sample:
    key: str                  # unique within the dataset: shard key, or the photo's path for the official layout
    image: bytes
    label: int                # index into Dataset.classnames
    class_name: str
    group: str                # common | counter
    background: str | None
    meta: dict = field(default_factory=dict, compare=False)   # the sample's json record (ours), else {}


@dataclass
class Dataset:
    root: Path
    layout: str
    classnames: list[str]
    templates: list[str]
    one_vs_k: dict[int, list[int]] | None
    _official: dict = field(default_factory=dict, repr=False)   # split -> [(path, label, name, bg)]

    splits = layout.SPLITS

    def samples(self, split: str) -> Iterator[Sample]:
        if split not in self.splits:
            raise UserError(f"unknown split {split!r}; expected one of {', '.join(self.splits)}.")
        if self.layout == OFFICIAL:
            for path, label, name, bg in self._official[split]:
                yield Sample(str(path.relative_to(self.root)), path.read_bytes(), label, name, split, bg)
            return
        yield from self._release_samples(split)

    def count(self, split: str) -> int | None:
        """Photos in a split without reading the shards (the folder listing, or metadata.parquet), else None."""
        if self.layout == OFFICIAL:
            return len(self._official[split])
        path = self.root / layout.METADATA
        if not path.is_file():
            return None
        import pyarrow.parquet as pq

        try:
            groups = pq.read_table(path, columns=["group"]).column("group").to_pylist()
        except Exception:  # noqa: BLE001 (only a progress total: the shards are the truth)
            return None
        return sum(g == split for g in groups)

    def _release_samples(self, split: str) -> Iterator[Sample]:
        try:
            shards = layout.shard_paths(self.root, split)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the {split} split's shard list: {exc}",
                            where=str(self.root / split / layout.NSHARDS)) from None
        for shard in shards:
            if not shard.is_file():
                raise UserError(f"{split}/{layout.NSHARDS} lists {shard.name}, which is missing.", where=str(shard))
            with open(shard, "rb") as f:
                try:
                    for key, parts in shard_reader.iter_samples(f):
                        yield self._release_sample(shard, split, key, parts)
                except (OSError, EOFError, tarfile.TarError) as exc:
                    raise UserError(f"not a readable tar shard: {exc}", where=str(shard)) from None

    def _release_sample(self, shard: Path, split: str, key: str, parts: dict[str, bytes]) -> Sample:
        where = f"{shard}: sample {key}"
        image = next((parts[e] for e in (*layout.IMAGE_EXTENSIONS, *shard_reader.IMAGE_EXTENSIONS) if e in parts), None)
        if image is None:
            raise UserError(f"sample has no image ({', '.join(layout.IMAGE_EXTENSIONS)}); members: "
                            f"{', '.join(sorted(parts))}.", where=where)
        try:
            label = int(parts[layout.CLS].decode("ascii").strip())
        except KeyError:
            raise UserError("sample has no .cls label.", where=where) from None
        except (UnicodeDecodeError, ValueError):
            raise UserError(f".cls is not an integer: {parts[layout.CLS][:20]!r}.", where=where) from None
        if not 0 <= label < len(self.classnames):
            raise UserError(f".cls {label} is outside {layout.CLASSNAMES} (0..{len(self.classnames) - 1}).",
                            where=where)
        meta = {}
        if layout.JSON in parts:
            try:
                meta = json.loads(parts[layout.JSON])
            except ValueError as exc:
                raise UserError(f".json is not JSON: {exc}", where=where) from None
        group = meta.get("group") or split
        if group != split:
            raise UserError(f"sample's json says group {group!r} but it is in the {split} split.", where=where)
        return Sample(key, image, label, meta.get("class_name") or self.classnames[label], split,
                      meta.get("background"), meta)


def detect_layout(root: str | Path) -> tuple[str, Path]:
    """(layout, the folder its files sit in) for a dataset folder, or a UserError saying what was found."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset folder {str(root)!r} does not exist (or is not a folder).")
    if all((root / s / layout.NSHARDS).is_file() for s in layout.SPLITS):
        return RELEASE, root
    for top in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        if any(_CLASS_DIR.match(d.name) and any(_GROUP_DIR.match(g.name) for g in d.iterdir() if g.is_dir())
               for d in top.iterdir() if d.is_dir()):
            return OFFICIAL, top
    raise UserError(f"{root} is neither a release (common/{layout.NSHARDS} and counter/{layout.NSHARDS}) nor the "
                    "official CounterAnimal layout ('<imagenet idx> <name>/common-<bg>/*.jpg' folders, directly "
                    "or one level down).")


def open_dataset(root: str | Path) -> Dataset:
    kind, top = detect_layout(root)
    if kind == RELEASE:
        return _open_release(top)
    return _open_official(top)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"the release has no {path.name}.", where=str(path))
    lines = [line.rstrip("\r") for line in path.read_text(encoding="utf-8").split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _open_release(root: Path) -> Dataset:
    classnames = _read_lines(root / layout.CLASSNAMES)
    if not classnames or any(not n.strip() for n in classnames):
        raise UserError("classnames.txt is empty or has a blank line.", where=str(root / layout.CLASSNAMES))
    templates = [t for t in _read_lines(root / layout.TEMPLATES) if t.strip()]
    bad = [t for t in templates if "{c}" not in t]
    if not templates or bad:
        raise UserError(f"every zero-shot template needs {{c}}; {'none given' if not templates else repr(bad[0])}.",
                        where=str(root / layout.TEMPLATES))
    return Dataset(root, RELEASE, classnames, templates, _read_one_vs_k(root / layout.ONE_VS_K, len(classnames)))


def _read_one_vs_k(path: Path, n_labels: int) -> dict[int, list[int]] | None:
    """The release's 1-vs-k sets: {label index of a class: [label indices]}, or None when not shipped."""
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        sets = {int(k): [int(i) for i in v] for k, v in raw.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"expected {{class index: [label indices]}}: {exc}", where=str(path)) from None
    for cls, labels in sets.items():
        wrong = [i for i in [cls, *labels] if not 0 <= i < n_labels]
        if wrong:
            raise UserError(f"class {cls}: label index {wrong[0]} is outside classnames.txt (0..{n_labels - 1}).",
                            where=str(path))
    return sets


def _official_names(top: Path) -> list[str]:
    for path in (top / OFFICIAL_NAMES, top.parent / OFFICIAL_NAMES):
        if path.is_file():
            names: dict[int, str] = {}
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                idx, sep, name = line.partition("\t")
                if not sep or not idx.strip().isdigit():
                    raise UserError(f"line {n}: expected 'index<TAB>name', found {line[:60]!r}.", where=str(path))
                names[int(idx)] = name.strip()
            if sorted(names) != list(range(len(names))):
                raise UserError(f"indices are not 0..{len(names) - 1} without gaps.", where=str(path))
            return [names[i] for i in range(len(names))]
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES   # the names CLIP's ImageNet zero-shot uses

    return list(IMAGENET_CLASSNAMES)


def _open_official(top: Path) -> Dataset:
    classnames = _official_names(top)
    by_split: dict[str, list] = {s: [] for s in layout.SPLITS}
    for class_dir in sorted(top.iterdir()):
        m = _CLASS_DIR.match(class_dir.name) if class_dir.is_dir() else None
        if not m:
            continue
        label = int(m.group(1))
        if label >= len(classnames):
            raise UserError(f"class folder index {label} is outside the label space (0..{len(classnames) - 1}).",
                            where=str(class_dir))
        for group_dir in sorted(class_dir.iterdir()):
            g = _GROUP_DIR.match(group_dir.name) if group_dir.is_dir() else None
            if not g:
                continue
            for photo in sorted(group_dir.rglob("*")):
                if photo.is_file() and photo.suffix.lower() in IMAGE_SUFFIXES:
                    by_split[g.group(1)].append((photo, label, m.group(2), g.group(2)))
    return Dataset(top, OFFICIAL, classnames, _official_templates(top), None, by_split)


def _official_templates(top: Path) -> list[str]:
    """The paper's prompt, unless a zeroshot_classification_templates.txt sits beside the names file
    (an export of our release keeps its templates, so both layouts give the same numbers)."""
    for path in (top / layout.TEMPLATES, top.parent / layout.TEMPLATES):
        if path.is_file():
            templates = [t for t in _read_lines(path) if t.strip()]
            if not templates or any("{c}" not in t for t in templates):
                raise UserError("every zero-shot template needs {c}.", where=str(path))
            return templates
    return list(OFFICIAL_TEMPLATES)
