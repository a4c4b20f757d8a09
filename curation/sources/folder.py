"""A local folder tree ``<class>/<file>``: each image becomes a ``file://`` candidate that fetch
reads without HTTP. Files may sit deeper (``<class>/common-snow/x.jpg``, the official release
layout); a class folder may be named ``<imagenet idx> <name>`` (e.g. ``296 ice bear``).
source_id is the path relative to the root. Non-images and files outside any class folder are
recorded as rejects (hidden folders are skipped). License and attribution come from
``source.license`` / ``source.attribution``; with no license set, files keep null and are not filtered.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from curation.config import RunConfig
from curation.errors import UserError
from curation.sources.classes import ClassResolver
from curation.sources.common import Collector, normalize_license

SOURCE = "folder"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
_INDEXED = re.compile(r"^(\d{1,3})\s+(.+)$")   # "296 ice bear"


def load(cfg: RunConfig, root: Path):
    if not root.is_dir():
        raise UserError("no such folder (the folder source reads <class>/<image> files under it)", where=str(root))
    resolver = ClassResolver(cfg)
    lookup = cfg.class_lookup()
    by_idx = {cfg.class_index(c): c for c in cfg.classes}
    classes = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        m = _INDEXED.match(folder.name)
        if m and by_idx.get(int(m.group(1))) is lookup.get(m.group(2).strip().casefold(), False):
            classes[folder.name] = by_idx[int(m.group(1))]
        else:
            classes[folder.name] = resolver.resolve(folder.name, f"folder {folder.name}/")
    resolver.raise_unknown(str(root), "class folders")

    license = normalize_license(cfg.source.license)
    out = Collector(SOURCE, cfg.license_allow)
    for path in _files(root):
        rel = path.relative_to(root).as_posix()
        if len(path.relative_to(root).parts) < 2:
            out.reject(rel, "outside_class_folder", url=path.as_uri())
            continue
        c = classes[path.relative_to(root).parts[0]]
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            out.reject(rel, "not_an_image", url=path.as_uri(), class_name=c.name, license=license)
            continue
        out.add(path.as_uri(), resolver.index(c), c.name, rel, license, cfg.source.attribution,
                license_checked=license is not None)
    return out.result()


def _files(root: Path):
    """Every file under root in a stable order; hidden folders (.git, .cache) are not input."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            yield Path(dirpath) / name
