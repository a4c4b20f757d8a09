"""URL lists: one row per image in a CSV, TSV, Parquet or JSONL file, columns mapped by the config.

Rows are numbered from 1, header excluded; without an id column a row's source_id is its number.
A license or attribution column left at its default name may be absent (license stays null and
is not filtered); a column the config names explicitly must exist.
"""
from __future__ import annotations

from pathlib import Path

from curation.config import ColumnMap, RunConfig
from curation.errors import UserError
from curation.sources.classes import ClassResolver
from curation.sources.common import Collector, normalize_license
from curation.sources.tabular import read_strings, string_column

SOURCE = "url_list"


def load(cfg: RunConfig, path: Path):
    table = read_strings(path, cfg.source.format)
    cols = cfg.source.columns
    present = set(table.column_names)

    def column(key: str, name: str | None, required: bool) -> list | None:
        if name is None:
            return None
        if name not in present:
            if not required and name == ColumnMap.model_fields[key].default:
                return None
            raise UserError(f"no column '{name}' (source.columns.{key.rstrip('_')}); the file has: "
                            f"{', '.join(table.column_names) or 'no columns'}", where=str(path))
        return string_column(table, name, path)

    urls = column("url", cols.url, True)
    names = column("class_", cols.class_, True)
    ids = column("id", cols.id, True)
    licenses = column("license", cols.license, False)
    attributions = column("attribution", cols.attribution, False)
    license_checked = licenses is not None or cfg.source.license is not None

    resolver = ClassResolver(cfg)
    classes = []
    for row, (url, name) in enumerate(zip(urls, names), 1):
        if url is None or not url.strip():
            raise UserError(f"row {row}, column '{cols.url}': empty url", where=str(path))
        if ids is not None and (ids[row - 1] is None or not ids[row - 1].strip()):
            raise UserError(f"row {row}, column '{cols.id}': empty id", where=str(path))
        classes.append(resolver.resolve(name, f"row {row}"))
    resolver.raise_unknown(f"{path}, column '{cols.class_}'")

    out = Collector(SOURCE, cfg.license_allow)
    for i, (url, c) in enumerate(zip(urls, classes)):
        license = normalize_license(licenses[i] if licenses else None) or normalize_license(cfg.source.license)
        attribution = (attributions[i] if attributions else None) or cfg.source.attribution
        out.add(url, resolver.index(c), c.name, ids[i].strip() if ids else str(i + 1), license,
                attribution or None, license_checked=license_checked)
    return out.result()
