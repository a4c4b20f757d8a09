"""The validator names file, row and column; schemas carry name and version."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from schemas import SchemaError


def _candidates(**overrides):
    cols = {"uid": ["a", "b"], "url": ["http://x/1.jpg", "http://x/2.jpg"], "class_idx": [1, 2],
            "class_name": ["goldfish", "great white shark"], "source": ["url_list"] * 2, "source_id": ["1", "2"]}
    cols.update(overrides)
    return pa.table(cols)


def test_conform_casts_orders_and_fills_optional_columns():
    table = schemas.conform(_candidates(), "candidates")
    assert table.schema.equals(schemas.CANDIDATES, check_metadata=True)
    assert table.column("class_idx").type == pa.int32()
    assert table.column("license").null_count == 2
    assert schemas.version_of(table.schema) == 1


def test_missing_required_column_is_named():
    with pytest.raises(SchemaError, match=r"list.csv, column 'url': missing required column"):
        schemas.conform(_candidates().drop(["url"]), "candidates", "list.csv")


def test_null_in_required_field_names_row_and_column():
    with pytest.raises(SchemaError) as exc:
        schemas.conform(_candidates(uid=["a", None]), "candidates", "c.parquet")
    assert (exc.value.row, exc.value.column) == (1, "uid")


def test_uncastable_value_names_row():
    with pytest.raises(SchemaError) as exc:
        schemas.conform(_candidates(class_idx=["1", "two"]), "candidates", "c.parquet")
    assert (exc.value.row, exc.value.column) == (1, "class_idx")


def test_read_rejects_other_artifact_and_unreadable_file(tmp_path):
    good = tmp_path / "c.parquet"
    pq.write_table(schemas.conform(_candidates(), "candidates"), good)
    assert schemas.read(good, "candidates").num_rows == 2
    with pytest.raises(SchemaError, match="is a 'candidates' table, expected 'samples'"):
        schemas.read(good, "samples")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match="bad.parquet: not a readable parquet file"):
        schemas.read(bad, "candidates")


def test_atomic_outputs_are_readable_like_any_new_file(tmp_path):
    import stat

    from curation import atomic

    atomic.write_text(tmp_path / "report.html", "<p>hi</p>")
    assert stat.S_IMODE((tmp_path / "report.html").stat().st_mode) == 0o666 & ~atomic._UMASK
    assert not list(tmp_path.glob(".*.tmp"))
