"""`make demo`: the curation DAG end to end on a small bundled example, offline.

Builds demo-run/ from scratch: a few dozen photo-like images generated locally, served by
pipeline/imageserver.py on 127.0.0.1 (port 0) with two faulty URLs among them, a URL list
naming three of the paper's classes, then `counteranimal init` and `counteranimal curate`
(sources -> fetch). Prints where everything landed.
"""
from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

from curation import config, presets
from pipeline import cli
from pipeline.imageserver import ImageServer, write_photos

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "demo-run"
N_IMAGES = 36
STAGES = "sources,fetch"


def build_example(run: Path, server: ImageServer, names: list[str]) -> Path:
    """A URL list over the served photos: three paper classes, plus a 404 and a truncated JPEG."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    classes = [IMAGENET_CLASSNAMES[row["imagenet_idx"]] for row in presets.paper_pairs()[:3]]
    path = run / "example" / "urls.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "class", "license", "attribution"])
        for i, name in enumerate(names):
            w.writerow([server.url(f"/img/{name}"), classes[i % 3], "CC-BY 4.0", f"(c) counteranimal demo {i}"])
        w.writerow([server.url("/fault/404"), classes[0], "CC-BY 4.0", "(c) counteranimal demo, missing photo"])
        w.writerow([server.url("/fault/truncated.jpg"), classes[1], "CC-BY 4.0", "(c) counteranimal demo, cut short"])
    return path


def configure(run: Path, url_list: Path) -> None:
    cfg = config.load(run)
    cfg.source = config.SourceSpec(kind="url_list", path=str(url_list.relative_to(run)))
    cfg.fetch = cfg.fetch.model_copy(update={"allowed_networks": ["127.0.0.0/8"], "chunk_size": 12,
                                             "thread_count": 8, "image_size": 256, "timeout": 5.0})
    (run / "config.yaml").write_text("# counteranimal demo run (written by pipeline/demo.py)\n" + config.dump(cfg))


def main() -> int:
    shutil.rmtree(RUN, ignore_errors=True)
    names = write_photos(RUN / "example" / "photos", N_IMAGES, seed=3, sizes=(300, 640))
    with ImageServer(RUN / "example" / "photos") as server:
        print(f"demo: serving {len(names)} example images on {server.base}")
        if cli.main(["init", str(RUN), "--preset", "counteranimal"]) != 0:
            return 1
        configure(RUN, build_example(RUN, server, names))
        code = cli.main(["curate", str(RUN), "--stages", STAGES])
    if code != 0:
        return code
    shards = sorted(p.name for p in (RUN / "shards").glob("*.tar"))
    print(f"\ndemo: done. Output in {RUN}/\n"
          f"  config.yaml                    the run's settings (preset counteranimal, source = example/urls.csv)\n"
          f"  candidates/candidates.parquet  one row per photo to fetch\n"
          f"  shards/                        {len(shards)} WebDataset shards ({', '.join(shards)}) + img2dataset metadata\n"
          f"  samples/                       one outcome per candidate (ok, or failed with its reason)\n"
          f"  manifest.json                  versions, config hash, counts and timings per stage")
    return 0


if __name__ == "__main__":
    sys.exit(main())
