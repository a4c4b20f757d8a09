"""One validator for every artifact: it names the file, the row and the column at fault."""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.tables import SCHEMA_KEY, SCHEMAS, VERSION_KEY


class SchemaError(ValueError):
    def __init__(self, source: str, message: str, row: int | None = None, column: str | None = None):
        self.source, self.row, self.column = source, row, column
        where = source
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {message}")


def conform(table: pa.Table, name: str, source: str = "<table>") -> pa.Table:
    """Return ``table`` cast to the schema ``name`` (columns in order, extra columns dropped).

    Raises SchemaError naming source, row and column on a missing column, a value that
    does not cast, or a null in a required field.
    """
    schema = SCHEMAS[name]
    found = table.schema.metadata or {}
    if SCHEMA_KEY in found:
        found_name = found[SCHEMA_KEY].decode()
        if found_name != name:
            raise SchemaError(source, f"is a '{found_name}' table, expected '{name}'")
        have, want = int(found.get(VERSION_KEY, b"1")), int(schema.metadata[VERSION_KEY])
        if have > want:
            raise SchemaError(source, f"was written with {name} schema v{have}; this version reads up to v{want}")
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            if field.nullable:
                columns.append(pa.nulls(table.num_rows, field.type))
                continue
            raise SchemaError(source, f"missing required column (have: {', '.join(table.column_names) or 'none'})",
                              column=field.name)
        col = table.column(field.name)
        try:
            col = col.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise SchemaError(source, f"expected {field.type}: {exc}", row=_first_uncastable(col, field.type),
                              column=field.name) from None
        if not field.nullable and col.null_count:
            first = pc.index(pc.is_null(col), True).as_py()
            raise SchemaError(source, "required value is empty", row=first, column=field.name)
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def _first_uncastable(col: pa.ChunkedArray, typ: pa.DataType) -> int | None:
    for i, value in enumerate(col.to_pylist()):
        try:
            pa.array([value]).cast(typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return i
    return None


def read(path: str | os.PathLike, name: str) -> pa.Table:
    """Read a parquet artifact and validate it against schema ``name``."""
    try:
        # A URL path (curation/storage.UrlPath) is not os.PathLike: read its bytes through its own open.
        table = pq.read_table(path if isinstance(path, (str, os.PathLike)) else pa.BufferReader(path.read_bytes()))
    except (OSError, pa.ArrowInvalid) as exc:
        raise SchemaError(str(path), f"not a readable parquet file ({exc})") from None
    return conform(table, name, str(path))


def read_folder(folder: str | os.PathLike, name: str) -> pa.Table:
    """Read every ``*.parquet`` in ``folder`` (sorted, temp files skipped) as one table."""
    from pathlib import Path

    folder = folder if hasattr(folder, "glob") else Path(folder)   # a Path, or a URL path from curation/storage
    files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        return SCHEMAS[name].empty_table()
    return pa.concat_tables([read(p, name) for p in files])
