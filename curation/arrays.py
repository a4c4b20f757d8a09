"""Arrow columns as numpy arrays, without going through Python lists."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def embeddings(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An embedding column (lists of one length, e.g. scores.embedding) as an (n, dim) float32 array."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(column) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(column), -1)
