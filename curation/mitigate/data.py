"""What mitigate trains and judges on: photos with a class and a background, split three ways.

Sources:
- a run directory: RUN/groups (the human groups, RUN/groups/human.parquet, when annotation has been
  pulled; else the model's groups, RUN/groups/model-*.parquet — `Data.source` says which), the
  photos in RUN/shards located through RUN/samples, and each class's (common, counter) pair from
  RUN/proposals.parquet (kept rows of the same source). Every group (class × background) is split
  by a hash of the uid: train, validation and a held-back test part.
- a planted world (benchmarks and tests): its pool's ground-truth classes and backgrounds (clean
  photos only) for training; its balanced grid for validation (a third of each cell) and test (the
  rest); the pair per biased class is its planted common and the oracle's counter.

- a release folder (ours or the official layout, read by curation/release_reader.py): each class's
  common and counter photos are its two groups and its pair; each group split by a hash of the key.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from curation import config as run_config, shard_reader
from curation.errors import UserError

SPLITS = ("train", "val", "test")


@dataclass
class Data:
    source: str                       # e.g. "run groups: human", "world ground truth"
    classes: list[str]                # the label space, in order
    backgrounds: list[str]
    uids: list[str]
    y: np.ndarray                     # class index per photo
    b: np.ndarray                     # background index per photo
    split: np.ndarray                 # train | val | test per photo
    pairs: dict[int, tuple[int, int]]   # class -> (common, counter) background indices
    images: Callable[[Sequence[int]], Iterator[tuple[int, Image.Image]]]   # (index, photo), in any order
    class_templates: list[str] = field(default_factory=list)       # the source's own prompts ({} slot)
    background_templates: list[str] = field(default_factory=list)
    key: str = ""                     # identifies the photos (for the feature cache)

    def index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def counts(self) -> dict[str, int]:
        return {s: int((self.split == s).sum()) for s in SPLITS}


def _hash01(uid: str, salt: str = "") -> float:
    return int(hashlib.sha1(f"{salt}{uid}".encode()).hexdigest()[:12], 16) / float(1 << 48)


def split_groups(uids: Sequence[str], groups: Sequence, fractions: tuple[float, float, float],
                 seed: int = 0) -> np.ndarray:
    """Per group, photos ordered by a hash of their uid: the first share is test, the next val, the rest train.

    Each group of three or more photos gets at least one in each part; smaller groups train only.
    """
    _, val_share, test_share = fractions
    out = np.array(["train"] * len(uids), dtype=object)
    by_group: dict = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    for members in by_group.values():
        order = sorted(members, key=lambda i: _hash01(uids[i], str(seed)))
        n = len(order)
        if n < 3:
            continue
        n_test = max(1, round(n * test_share))
        n_val = max(1, round(n * val_share))
        for i in order[:n_test]:
            out[i] = "test"
        for i in order[n_test:n_test + n_val]:
            out[i] = "val"
    return out


def _decode(data: bytes, where: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data)).convert("RGB")
    except Exception as exc:  # noqa: BLE001 (PIL raises many kinds)
        raise UserError(f"cannot decode the photo ({exc}).", where=where) from None


def from_run(run: str | Path, fractions: tuple[float, float, float] = (0.5, 0.2, 0.3), seed: int = 0,
             groups: str = "auto") -> Data:
    """The run's grouped photos. groups: auto (human when present, else model) | human | model."""
    import schemas

    run = Path(run)
    cfg = run_config.load(run / "config.yaml") if (run / "config.yaml").is_file() else None
    group_dir = run / "groups"
    human = group_dir / "human.parquet"
    model_files = sorted(p for p in group_dir.glob("model-*.parquet")) if group_dir.is_dir() else []
    if groups == "auto":
        groups = "human" if human.is_file() else "model"
    files = [human] if groups == "human" else model_files
    if not files or not all(f.is_file() for f in files):
        raise UserError(f"no {groups} groups in this run.", where=str(group_dir),
                        hint="Run `counteranimal curate RUN` first (model groups), and `counteranimal annotate "
                             "pull RUN` for human-verified groups.")
    rows = [r for f in files for r in schemas.read(f, "groups").to_pylist()]
    seen: dict[str, dict] = {}
    for r in rows:
        seen.setdefault(r["uid"], r)
    rows = list(seen.values())

    samples = schemas.read_folder(run / "samples", "samples").to_pylist() if (run / "samples").is_dir() else []
    located = {s["uid"]: (s["shard"], s["key"]) for s in samples if s["status"] == "ok" and s["shard"]}
    missing = [r["uid"] for r in rows if r["uid"] not in located]
    if missing:
        raise UserError(f"{len(missing)} grouped photo(s) have no stored image in RUN/samples "
                        f"(first: {missing[0]}).", where=str(run / "samples"),
                        hint="Re-run `counteranimal curate RUN` so samples and groups agree.")
    class_of = {r["class_idx"]: r["class_name"] for r in rows}
    class_ids = sorted(class_of)
    classes = [class_of[c] for c in class_ids]
    backgrounds = list(cfg.backgrounds) if cfg else []
    backgrounds += sorted({r["background"] for r in rows} - set(backgrounds))
    y = np.array([class_ids.index(r["class_idx"]) for r in rows], dtype=np.int64)
    b = np.array([backgrounds.index(r["background"]) for r in rows], dtype=np.int64)
    uids = [r["uid"] for r in rows]
    split = split_groups(uids, list(zip(y.tolist(), b.tolist())), fractions, seed)

    pairs: dict[int, tuple[int, int]] = {}
    proposals = run / "proposals.parquet"
    if proposals.is_file():
        for p in schemas.read(proposals, "proposals").to_pylist():
            if (p["source"] == groups and p["decision"] == "kept" and p["class_idx"] in class_ids
                    and p["common"] in backgrounds and p["counter"] in backgrounds):
                pairs[class_ids.index(p["class_idx"])] = (backgrounds.index(p["common"]), backgrounds.index(p["counter"]))

    shards = run / "shards"

    def images(indices: Sequence[int]) -> Iterator[tuple[int, Image.Image]]:
        wanted: dict[str, dict[str, int]] = {}
        for i in indices:
            shard, key = located[uids[i]]
            wanted.setdefault(shard, {})[key] = i
        found: dict[int, Image.Image] = {}
        for shard, keys in sorted(wanted.items()):
            with open(shards / shard, "rb") as f:
                for key, parts in shard_reader.iter_samples(f):
                    if key in keys:
                        data = shard_reader.image_bytes(parts)
                        if data is None:
                            raise UserError(f"sample {key} has no image.", where=str(shards / shard))
                        found[keys[key]] = _decode(data, f"{shards / shard}:{key}")
            absent = set(keys.values()) - set(found)
            if absent:
                raise UserError(f"{len(absent)} photo(s) are not in the shard.", where=str(shards / shard),
                                hint="Re-run `counteranimal curate RUN` (clean checks what each shard holds).")
            yield from sorted(found.items())   # shard by shard: memory holds one shard's photos
            found.clear()

    class_templates = list(cfg.prompts.classes) if cfg else []
    bg_templates = list(cfg.prompts.backgrounds) if cfg else []
    key = hashlib.sha1(json.dumps([str(run.resolve()), groups, sorted(uids)]).encode()).hexdigest()[:16]
    return Data(f"run groups: {groups}", classes, backgrounds, uids, y, b, split, pairs, images,
                class_templates, bg_templates, key)


def from_world(world_dir: str | Path, val_share: float = 1 / 3, seed: int = 0) -> Data:
    """A planted world's ground truth: pool (clean photos) to train on, its grid for validation and test."""
    from curation.world.oracle import read_oracle

    world_dir = Path(world_dir)
    world = json.loads((world_dir / "world.json").read_text())
    oracle = read_oracle(world_dir)
    classes, backgrounds = list(world["classes"]), list(world["backgrounds"])
    truth = pq.read_table(world_dir / "ground_truth.parquet").to_pylist()
    rows = [r for r in truth if (r["split"] == "pool" and r["noise"] == "none") or r["split"] == "grid"]
    rows = [r for r in rows if r["class_name"] in classes and r["background"] in backgrounds]
    uids = [r["uid"] for r in rows]
    y = np.array([classes.index(r["class_name"]) for r in rows], dtype=np.int64)
    b = np.array([backgrounds.index(r["background"]) for r in rows], dtype=np.int64)
    split = np.array(["train"] * len(rows), dtype=object)
    grid = [i for i, r in enumerate(rows) if r["split"] == "grid"]
    grid_split = split_groups([uids[i] for i in grid], [(y[i], b[i]) for i in grid],
                              (0.0, val_share, 1 - val_share), seed)
    for i, s in zip(grid, grid_split):
        split[i] = "test" if s == "test" else "val"
    pairs = {}
    for name, info in oracle["classes"].items():
        if info.get("biased") and name in classes:
            pairs[classes.index(name)] = (backgrounds.index(info["planted_common"]),
                                          backgrounds.index(info["oracle_counter"]))
    files = [world_dir / r["file"] for r in rows]

    def images(indices: Sequence[int]) -> Iterator[tuple[int, Image.Image]]:
        for i in indices:
            yield i, Image.open(files[i]).convert("RGB")

    key = hashlib.sha1(json.dumps([str(world_dir.resolve()), world.get("spec")], sort_keys=True).encode()).hexdigest()[:16]
    return Data("world ground truth (pool → train, grid → val/test)", classes, backgrounds, uids, y, b, split,
                pairs, images, list(world.get("class_templates", [])), list(world.get("background_templates", [])), key)


def from_release(root: str | Path, fractions: tuple[float, float, float] = (0.5, 0.2, 0.3), seed: int = 0) -> Data:
    """A release folder (ours or the official layout) through curation/release_reader.py.

    Groups are class × background; each class has its common and its counter group, which are its pair.
    The label space is the classes the release holds (as for a run). Photos are read again from the
    shards when encoded, so memory never holds the release.
    """
    from curation import release_reader

    ds = release_reader.open_dataset(root)
    rows = []
    for split in ds.splits:
        for s in ds.samples(split):
            rows.append((split, s.key, s.label, s.class_name, s.background or split))
    if not rows:
        raise UserError("the release holds no photos.", where=str(root))
    labels = sorted({r[2] for r in rows})
    name_of = {r[2]: r[3] for r in rows}
    classes = [name_of[lab] for lab in labels]
    backgrounds = sorted({r[4] for r in rows})
    y = np.array([labels.index(r[2]) for r in rows], dtype=np.int64)
    b = np.array([backgrounds.index(r[4]) for r in rows], dtype=np.int64)
    uids = [f"{r[0]}/{r[1]}" for r in rows]
    split = split_groups(uids, list(zip(y.tolist(), b.tolist())), fractions, seed)
    sides: dict[int, dict[str, int]] = {}
    for r, c, g in zip(rows, y.tolist(), b.tolist()):
        sides.setdefault(c, {})[r[0]] = g
    pairs = {c: (s["common"], s["counter"]) for c, s in sides.items()
             if "common" in s and "counter" in s and s["common"] != s["counter"]}
    position = {u: i for i, u in enumerate(uids)}

    def images(indices: Sequence[int]) -> Iterator[tuple[int, Image.Image]]:
        wanted = set(indices)
        for split_name in ds.splits:
            for s in ds.samples(split_name):
                i = position[f"{split_name}/{s.key}"]
                if i in wanted:
                    yield i, _decode(s.image, f"{root}: {split_name}/{s.key}")

    templates = [t.replace("{c}", "{}") for t in ds.templates]
    key = hashlib.sha1(json.dumps([str(Path(root).resolve()), sorted(uids)]).encode()).hexdigest()[:16]
    return Data(f"release ({ds.layout} layout)", classes, backgrounds, uids, y, b, split, pairs, images,
                templates, [], key)
