"""Reading a user's table (CSV, TSV, Parquet, JSONL) as string columns, with errors that name
the file and, for a malformed file, the line at fault."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from curation.errors import UserError

FORMATS = ("csv", "tsv", "parquet", "jsonl")
_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "tsv", ".parquet": "parquet", ".pq": "parquet",
           ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")


def detect_format(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSED:
        suffixes.pop()
    found = _SUFFIX.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise UserError(f"cannot tell the format from the file name; set source.format to one of {', '.join(FORMATS)}",
                        where=str(path))
    return found


def read_strings(path: Path, fmt: str | None) -> pa.Table:
    """The whole table, every column as a string (ids like "007" keep their zeros)."""
    if not path.exists():
        raise UserError("file not found", where=str(path), hint="Check source.path in config.yaml.")
    if path.is_dir():
        raise UserError("is a folder, expected a file (for a folder tree use source.kind: folder)", where=str(path))
    fmt = detect_format(path, fmt)
    try:
        if fmt in ("csv", "tsv"):
            table = _read_delimited(path, "," if fmt == "csv" else "\t")
        elif fmt == "parquet":
            table = pq.read_table(path)
        else:
            table = pajson.read_json(path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError, UnicodeDecodeError) as exc:
        where = _where_malformed(path, fmt)
        if where is None and fmt == "jsonl" and not isinstance(exc, OSError):
            table = _read_jsonl_as_text(path)   # valid JSON whose types vary from line to line
        else:
            raise UserError(f"not a readable {fmt} file: {where or _short(exc)}", where=str(path)) from None
    names = table.column_names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        several = len(twice) > 1
        raise UserError(f"the column{'s' if several else ''} {', '.join(repr(n) for n in twice)} "
                        f"appear{'' if several else 's'} more than once in the header; rename or drop the extra "
                        "copies", where=str(path))
    return table


def _read_jsonl_as_text(path: Path) -> pa.Table:
    """JSON Lines whose values change type between lines ({"id": 7} then {"id": "x7"}): every
    scalar as its text; a list or object where text belongs names the line and key."""
    rows, names = [], {}
    with pa.input_stream(str(path), compression="detect") as f:
        for n, line in enumerate(io.TextIOWrapper(f, encoding="utf-8"), 1):
            if not line.strip():
                continue
            row = {}
            for key, value in json.loads(line).items():
                if isinstance(value, (list, dict)):
                    raise UserError(f"line {n}, key {key!r}: a JSON {type(value).__name__}, expected text",
                                    where=str(path))
                row[key] = None if value is None else value if isinstance(value, str) else json.dumps(value)
                names.setdefault(key, None)
            rows.append(row)
    return pa.Table.from_pylist(rows, schema=pa.schema([(k, pa.string()) for k in names]))


def string_column(table: pa.Table, name: str, path: Path) -> list[str | None]:
    col = table.column(name)
    if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
        try:
            col = col.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise UserError(f"column '{name}' holds {col.type}, expected text", where=str(path)) from None
    return col.to_pylist()


def _read_delimited(path: Path, delimiter: str) -> pa.Table:
    names = _header(path, delimiter)
    return pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(delimiter=delimiter),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                             strings_can_be_null=False),
    )


def _header(path: Path, delimiter: str) -> list[str]:
    with pa.input_stream(str(path), compression="detect") as f:
        head = f.read(1 << 20)
    first = head.split(b"\n", 1)[0].decode("utf-8-sig", errors="strict").rstrip("\r")
    if not first.strip():
        raise UserError("empty file or empty header line; the first line must name the columns", where=str(path))
    return next(csv.reader([first], delimiter=delimiter))


def _where_malformed(path: Path, fmt: str) -> str | None:
    """Find the first bad line with the standard library, for a message a user can act on."""
    try:
        with pa.input_stream(str(path), compression="detect") as f:
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            if fmt == "jsonl":
                for n, line in enumerate(text, 1):
                    if line.strip():
                        try:
                            if not isinstance(json.loads(line), dict):
                                return f"line {n} is not a JSON object"
                        except json.JSONDecodeError as exc:
                            return f"line {n} is not valid JSON ({exc.msg})"
            elif fmt in ("csv", "tsv"):
                reader = csv.reader(text, delimiter="," if fmt == "csv" else "\t", strict=True)
                width, start = None, 1
                for row in reader:
                    if width is None:
                        width = len(row)
                    elif row and len(row) != width:
                        if reader.line_num > start:
                            return f"the quote opened on line {start} is never closed where expected"
                        return f"line {start} has {len(row)} fields, the header has {width} (a stray delimiter?)"
                    start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte {exc.start} of a block)"
    except csv.Error as exc:
        hint = " (a quote that is never closed?)" if "end of data" in str(exc) else ""
        return f"line {reader.line_num}: {exc}{hint}"
    except OSError as exc:
        return _short(exc)
    return None


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300]
