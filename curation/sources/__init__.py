"""Sources: candidate rows (uid, url, class, source id, license, attribution) from real inputs.

One entry point, ``load_candidates(cfg, base_dir)``, dispatches on ``cfg.source.kind``:

- ``url_list``    a CSV / TSV / Parquet / JSONL file with a column mapping (url_list.py)
- ``inaturalist`` the iNaturalist open-data export: taxa, observations, photos, observers (inaturalist.py)
- ``folder``      a local tree ``<class>/<file>``, read as file:// URLs without HTTP (folder.py)

Every input row ends either as a candidate or as a reject with its reason (duplicate_url,
license, not_an_image, …); ``counts`` adds up to the rows read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from curation.config import RunConfig
from curation import storage
from curation.errors import UserError
from curation.sources.common import normalize_license, normalize_url, uid_for


@dataclass(frozen=True)
class CandidateResult:
    table: pa.Table      # schemas.CANDIDATES, sorted by uid
    rejected: pa.Table   # schemas.SOURCE_REJECTS, in input order
    counts: dict[str, int]


def resolve_path(cfg: RunConfig, base_dir: Path | None) -> Path:
    """The source path from the config; relative paths are taken from ``base_dir`` (the run dir)."""
    if not cfg.source.path:
        raise UserError(f"the {cfg.source.kind} source needs a path", where="config.yaml: source.path")
    if storage.is_url(cfg.source.path):
        return storage.path(cfg.source.path)
    path = Path(cfg.source.path).expanduser()
    if not path.is_absolute() and base_dir is not None:
        return storage.path(base_dir) / cfg.source.path if storage.is_url(base_dir) else Path(base_dir) / path
    return path.absolute()


def load_candidates(cfg: RunConfig, base_dir: Path | None = None) -> CandidateResult:
    path = resolve_path(cfg, base_dir)
    if storage.is_url(path):
        if cfg.source.kind != "url_list":
            raise UserError(f"a {cfg.source.kind} source is read from a local folder, not an object store",
                            where=f"config.yaml: source.path ({path})",
                            hint="Give source.path as an absolute local path, or use a url_list source.")
        if not path.is_file():
            raise UserError("no such source file", where=f"config.yaml: source.path ({path})")
        with storage.local_copy(path) as local:      # the readers name the file they read: name it for them
            try:
                return _load(cfg, local)
            except UserError as exc:
                raise UserError(str(exc).replace(str(local), str(path))) from None
    return _load(cfg, path)


def _load(cfg: RunConfig, path: Path) -> CandidateResult:
    if cfg.source.kind == "url_list":
        from curation.sources.url_list import load
    elif cfg.source.kind == "inaturalist":
        from curation.sources.inaturalist import load
    else:
        from curation.sources.folder import load
    return load(cfg, path)


__all__ = ["CandidateResult", "load_candidates", "normalize_license", "normalize_url", "resolve_path", "uid_for"]
