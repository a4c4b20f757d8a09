"""The candidate pool as a URL list, for a loopback server that serves OUT/pool/.

The server's port is only known once it runs, so the list is written for a given base URL. The
default route ``img`` matches pipeline/imageserver.py's ``/img/<file>``; ``route=""`` gives
``BASE/<file>``, what any static file server of OUT/pool/ serves (`counteranimal world urls`):

    server = ImageServer(world_dir / "pool").start()            # pipeline/imageserver.py
    write_candidate_urls(world_dir, f"http://127.0.0.1:{server.port}", run / "urls.csv")

Columns: url, class, license, attribution, id. `id` is the pool image's uid, the key of its
truth in OUT/ground_truth.parquet (map it with source.columns.id: id). Rows come in a shuffled,
seed-determined order, so duplicates and noise are spread through the list as in a crawl.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from curation import atomic
from curation.world.generate import read_world

COLUMNS = ("url", "class", "license", "attribution", "id")


def candidate_rows(world_dir: str | Path, base_url: str, route: str = "img") -> list[dict]:
    world_dir = Path(world_dir)
    world = read_world(world_dir)
    pool = pq.read_table(world_dir / "ground_truth.parquet", filters=[("split", "=", "pool")]).to_pylist()
    order = np.random.default_rng([world["spec"]["seed"], 99]).permutation(len(pool))
    base = "/".join(part for part in (base_url.rstrip("/"), route.strip("/")) if part)
    return [{"url": f"{base}/{Path(pool[i]['file']).name}", "class": pool[i]["label_class"],
             "license": pool[i]["license"] or "", "attribution": pool[i]["attribution"] or "", "id": pool[i]["uid"]}
            for i in order]


def write_candidate_urls(world_dir: str | Path, base_url: str, out_path: str | Path, route: str = "img") -> Path:
    """Write the pool's URL list (CSV) pointing at `base_url`; returns the path."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(candidate_rows(world_dir, base_url, route))
    atomic.write_text(out_path, buf.getvalue())
    return Path(out_path)
