"""Evaluate an open_clip model on a CounterAnimal-style dataset: metrics per class and group, as data.

One entry point, WILDS style: ``evaluate(dataset, clip)`` returns a plain dict (JSON-ready);
``format_table`` prints it, ``write_outputs`` writes CSV, JSON and (several models) the
effective-robustness plot. Accuracies are in percent, as the paper reports them.

Protocol (the paper's):
- Zero-shot over the dataset's label space (``classnames.txt``; the 1,000 ImageNet names for the
  official layout), one text embedding per name averaged over the templates (``{c}``), as
  clip_benchmark and open_clip build it. "1 vs N": the top-1 over every name.
- "1 vs k" (k = 20): the top-1 among a class's k labels. Our releases ship the reference model's
  sets (``one_vs_k.json``: per class, the k labels with the highest mean cosine similarity to its
  images, its own label included); without them (the official layout) each evaluated model's own
  k closest labels to the class's images (both groups) are used, and the output says which.
- Per class: accuracy on its common and its counter photos. Class-balanced accuracy of a group is
  the mean of the per-class accuracies over the classes that have photos in it (so it equals
  clip_benchmark's ``mean_per_class_recall`` on that split); the drop is the mean over classes with
  both groups of (common − counter); worst-group accuracy is the lowest (class, group) accuracy.
- Intervals: a percentile bootstrap that resamples photos within each (class, group) cell, with a
  fixed seed (a resampled cell's number of correct photos is Binomial(n, observed accuracy), which
  is what is drawn).
"""
from __future__ import annotations

import csv
import io
import json
import os
import queue
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from curation import atomic
from curation.errors import UserError
from curation.release_reader import OFFICIAL, Dataset, Sample

K = 20
BOOTSTRAP = 1000
SEED = 0
LEVEL = 0.95
BATCH_SIZE = 64
PROTOCOLS = ("full", "k")   # 1 vs N (every label), 1 vs k
SUMMARY_FIELDS = ("common", "counter", "drop", "worst_group")


# -- images through the model ----------------------------------------------------------------------

def _decode(preprocess, sample: Sample):
    from PIL import Image

    try:
        with Image.open(io.BytesIO(sample.image)) as img:
            # convert("RGB") of an RGB image is a copy of its pixels: the same values, so skipped
            return preprocess(img if img.mode == "RGB" else img.convert("RGB"))
    except Exception as exc:   # noqa: BLE001 - re-raised naming the photo
        raise UserError(f"cannot decode the image: {exc}", where=f"{sample.group}/{sample.key}") from None


def _decode_all(preprocess, samples: Sequence[Sample]) -> list:
    return [_decode(preprocess, s) for s in samples]


def _overlap(device: str, decode_threads: int) -> bool:
    """Decode the next batches beside the forward? Not on a CPU whose cores the forward's threads need
    (the score stage's rule: an OpenMP forward waits for its slowest thread; bench/RESULTS.md "## score")."""
    import torch

    n = torch.get_num_threads()
    return device != "cpu" or n == 1 or n + decode_threads <= (os.cpu_count() or 1)


def embed(clip, samples: Iterable[Sample], *, batch_size: int = BATCH_SIZE, threads: int | None = None,
          progress=None) -> tuple[np.ndarray, list[Sample]]:
    """Normalised image embeddings (n, d) float32 for the samples, in order, with the samples (bytes dropped).

    A thread pool decodes and preprocesses the next batches while the model runs the current one
    (the score stage's batching), and a thread of its own reads them from the shards, so the forward
    waits for neither where there are cores for them.
    """
    import torch

    from curation import zeroshot

    threads = threads or max(2, (os.cpu_count() or 2) - 1)
    ahead = 2 if _overlap(clip.device, threads) else 0
    out, kept = [], []
    with ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool:
        def start(batch):   # one task per thread and batch, not per photo: a future costs about a resize
            step = -(-len(batch) // threads)
            return [pool.submit(_decode_all, clip.preprocess, batch[i:i + step]) for i in range(0, len(batch), step)]

        started = _read_ahead(_batches(samples, batch_size), start, ahead)
        try:
            for batch, futures in started:
                pixels = torch.stack([x for f in futures for x in f.result()])
                out.append(zeroshot.encode_images(clip, pixels))
                kept += [Sample(s.key, b"", s.label, s.class_name, s.group, s.background, s.meta) for s in batch]
                if progress is not None:
                    progress.update(len(batch))
        finally:
            started.close()     # stops the reader before the pool shuts down
    if not out:
        return np.zeros((0, 0), np.float32), []
    return np.concatenate(out).astype(np.float32, copy=False), kept


def _batches(samples: Iterable[Sample], size: int) -> Iterator[list[Sample]]:
    batch = []
    for s in samples:
        batch.append(s)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _read_ahead(batches: Iterator[list], start, ahead: int) -> Iterator[tuple[list, list]]:
    """(batch, start(batch)) in order. ahead = 0: each batch is read and started only when the previous
    one has been used (no decoding beside the forward); else a reader thread keeps up to ``ahead``
    batches read and started beyond the one in use. The reader's errors are raised here."""
    if not ahead:
        for b in batches:
            yield b, start(b)
        return
    q: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def read():
        try:
            for b in batches:
                if not put((b, start(b))):
                    return
            put(done)
        except BaseException as exc:   # noqa: BLE001 - handed to the consumer, which raises it
            put(exc)

    reader = threading.Thread(target=read, name="read-shards", daemon=True)
    reader.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def text_embeddings(clip, classnames: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """One normalised embedding per label name, averaged over the ``{c}`` templates (zeroshot.encode_texts)."""
    from curation import zeroshot

    return zeroshot.encode_texts(clip, list(classnames), [lambda n, t=t: t.format(c=n) for t in templates])


# -- the entry point ------------------------------------------------------------------------------

def evaluate(dataset: Dataset, clip, *, k: int = K, n_boot: int = BOOTSTRAP, seed: int = SEED,
             batch_size: int = BATCH_SIZE, threads: int | None = None, progress: bool = True) -> dict:
    """Every metric of the module doc for one model on one dataset, as a JSON-ready dict."""
    from tqdm import tqdm

    started = time.monotonic()
    labels_emb = text_embeddings(clip, dataset.classnames, dataset.templates)
    embs, samples = [], []
    images_started = time.monotonic()
    for split in dataset.splits:
        with tqdm(total=dataset.count(split), unit="img", desc=f"evaluate {split}", disable=not progress,
                  leave=False) as bar:
            e, s = embed(clip, dataset.samples(split), batch_size=batch_size, threads=threads, progress=bar)
        if len(s):
            embs.append(e)
            samples += s
    if not samples:
        raise UserError(f"{dataset.root}: the dataset has no photos.")
    emb = np.concatenate(embs)
    images_seconds = time.monotonic() - images_started
    truth = np.array([s.label for s in samples])
    pred_full = np.argmax(emb @ labels_emb.T, axis=1)
    sets, how = one_vs_k_sets(dataset, emb, truth, labels_emb, k)
    pred_k = np.empty_like(truth)
    for t, labels in sets.items():
        rows = np.nonzero(truth == t)[0]
        if len(rows):
            labels = np.asarray(labels)
            pred_k[rows] = labels[np.argmax(emb[rows] @ labels_emb[labels].T, axis=1)]
    correct = {"full": pred_full == truth, "k": pred_k == truth}
    result = metrics(samples, correct, dataset.classnames, n_boot=n_boot, seed=seed)
    k_used = "/".join(map(str, sorted({len(v) for v in sets.values()})))
    full_name, k_name = f"1 vs {len(dataset.classnames)}", f"1 vs {k_used}"
    if k_name == full_name:      # k covers the label space (a small world): tell the two rows apart
        k_name += " sets"
    result.update({
        "dataset": {"path": str(dataset.root), "layout": dataset.layout, "label_space": len(dataset.classnames),
                    "templates": list(dataset.templates),
                    "images": {g: int(sum(s.group == g for s in samples)) for g in dataset.splits},
                    "classes": len({s.label for s in samples})},
        "model": {"name": clip.name, "pretrained": clip.pretrained, "device": clip.device, "precision": clip.precision},
        "protocols": {"full": f"{full_name}: top-1 over every name in the label space",
                      "k": f"{k_name}: {how}"},
        "one_vs_k": {str(t): [int(i) for i in v] for t, v in sorted(sets.items())},
        "bootstrap": {"replicates": n_boot, "seed": seed, "level": LEVEL,
                      "how": "percentile bootstrap; photos resampled within each (class, group)"},
        "seconds": round(time.monotonic() - started, 3),      # text bank, images, metrics, bootstrap
        "images_seconds": round(images_seconds, 3),           # reading, decoding and the forward alone
        "images_per_second": round(len(samples) / images_seconds, 2) if images_seconds > 0 else None,
    })
    return result


def one_vs_k_sets(dataset: Dataset, emb: np.ndarray, truth: np.ndarray, labels_emb: np.ndarray,
                  k: int) -> tuple[dict[int, list[int]], str]:
    """Per class present, its k labels, and a sentence saying how they were chosen."""
    from curation import zeroshot

    present = sorted(set(truth.tolist()))
    own = zeroshot.closest_labels(emb, truth, labels_emb, k)
    shipped = dataset.one_vs_k or {}
    if not shipped:
        return ({t: own[t].tolist() for t in present},
                f"per class, this model's {min(k, len(labels_emb))} labels with the highest mean cosine similarity "
                "to the class's photos (both groups; the dataset ships no sets)")
    for t in present:
        if t in shipped and t not in shipped[t]:
            raise UserError(f"the 1-vs-k set of class {t} ({dataset.classnames[t]}) lacks the class's own label.",
                            where=str(dataset.root / "one_vs_k.json"))
    missing = [t for t in present if t not in shipped]
    how = ("the release's one_vs_k.json: per class, the reference model's labels with the highest mean cosine "
           "similarity to the class's photos")
    if missing:
        how += (f"; for {len(missing)} class(es) it lacks ({', '.join(dataset.classnames[t] for t in missing[:5])}), "
                "this model's own closest labels")
    return {t: list(shipped[t]) if t in shipped else own[t].tolist() for t in present}, how


# -- metrics ---------------------------------------------------------------------------------------

def metrics(samples: Sequence[Sample], correct: dict[str, np.ndarray], classnames: Sequence[str], *,
            n_boot: int = BOOTSTRAP, seed: int = SEED) -> dict:
    """Per-class and summary metrics (percent) with bootstrap intervals, for each protocol in ``correct``."""
    cells: dict[tuple[int, str], list[int]] = {}
    backgrounds: dict[tuple[int, str], set] = {}
    for i, s in enumerate(samples):
        cells.setdefault((s.label, s.group), []).append(i)
        if s.background:
            backgrounds.setdefault((s.label, s.group), set()).add(s.background)
    keys = sorted(cells)
    n = np.array([len(cells[c]) for c in keys])
    classes = sorted({c for c, _ in keys})
    out: dict = {"per_class": [], "summary": {}}
    rng_seed = np.random.SeedSequence(seed)
    for proto, ok, child in zip(correct, correct.values(), rng_seed.spawn(len(correct))):
        hits = np.array([int(ok[cells[c]].sum()) for c in keys])
        acc = hits / n
        rng = np.random.default_rng(child)
        boot = rng.binomial(n, acc, size=(n_boot, len(keys))) / n if n_boot else np.zeros((0, len(keys)))
        point = _summary(keys, acc[None, :])
        draws = _summary(keys, boot) if n_boot else None
        summary = {}
        for name in SUMMARY_FIELDS:
            value = float(point[name][0])
            entry = {"value": None if np.isnan(value) else 100 * value}
            if draws is not None and entry["value"] is not None:
                lo, hi = np.nanpercentile(draws[name], [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
                entry.update(low=100 * float(lo), high=100 * float(hi))
            summary[name] = entry
        w = int(point["worst_index"][0])
        summary["worst_group"].update(class_idx=keys[w][0], class_name=classnames[keys[w][0]], group=keys[w][1])
        for g in ("common", "counter"):
            rows = [i for i, c in enumerate(keys) if c[1] == g]
            summary[f"images_{g}"] = int(n[rows].sum())
            summary[f"accuracy_images_{g}"] = 100 * float(hits[rows].sum() / n[rows].sum()) if rows else None
        out["summary"][proto] = summary
        for j, cls in enumerate(classes):
            row = out["per_class"][j] if len(out["per_class"]) > j else None
            if row is None:
                row = {"class_idx": cls, "class_name": classnames[cls]}
                for g in ("common", "counter"):
                    row[f"n_{g}"] = len(cells.get((cls, g), []))
                    row[f"background_{g}"] = "/".join(sorted(backgrounds.get((cls, g), ()))) or None
                out["per_class"].append(row)
            a = {g: (float(acc[keys.index((cls, g))]) if (cls, g) in cells else None) for g in ("common", "counter")}
            row[f"common_{proto}"] = None if a["common"] is None else 100 * a["common"]
            row[f"counter_{proto}"] = None if a["counter"] is None else 100 * a["counter"]
            row[f"drop_{proto}"] = (100 * (a["common"] - a["counter"])
                                    if a["common"] is not None and a["counter"] is not None else None)
    return out


def _summary(keys: Sequence[tuple[int, str]], acc: np.ndarray) -> dict[str, np.ndarray]:
    """Class-balanced common/counter, drop and worst-group for each row of acc (draws x cells)."""
    common = [i for i, c in enumerate(keys) if c[1] == "common"]
    counter = [i for i, c in enumerate(keys) if c[1] == "counter"]
    nan = np.full(len(acc), np.nan)
    both = [(i, j) for i, ci in enumerate(keys) for j, cj in enumerate(keys)
            if ci[1] == "common" and cj[1] == "counter" and ci[0] == cj[0]]
    return {
        "common": acc[:, common].mean(axis=1) if common else nan,
        "counter": acc[:, counter].mean(axis=1) if counter else nan,
        "drop": (acc[:, [i for i, _ in both]] - acc[:, [j for _, j in both]]).mean(axis=1) if both else nan,
        "worst_group": acc.min(axis=1),
        "worst_index": acc.argmin(axis=1),
    }


# -- the paper's figures beside ours -----------------------------------------------------------------

_PRETRAINING = [(r"^laion400m", "LAION-400M"), (r"^openai$", "OpenAI"), (r"^datacomp", "DataComp-1B"),
                (r"^laion2b", "LAION-2B"), (r"^dfn2b", "DFN-2B"), (r"^dfn5b", "DFN-5B")]


def published_match(name: str, pretrained: str | None) -> tuple[str, str] | None:
    """(backbone, pretraining) of the paper's row for an open_clip model and tag, or None."""
    m = re.match(r"^ViT-(B|L|H|g|bigG)-(\d+)(?:-(\d+))?(?:-quickgelu)?$", name or "")
    if not m or not pretrained:
        return None
    backbone = f"ViT-{m.group(1)}/{m.group(2)}" + (f"-{m.group(3)}" if m.group(3) else "")
    for pattern, label in _PRETRAINING:
        if re.match(pattern, pretrained):
            return backbone, label
    return None


def published_beside(results: Sequence[dict], published: Sequence[dict]) -> list[dict]:
    """The paper's rows (1 vs 1000) with our figures beside those we evaluated."""
    ours = {}
    for r in results:
        key = published_match(r["model"]["name"], r["model"]["pretrained"])
        if key:
            ours[key] = r["summary"]["full"]
    rows = []
    for p in published:
        s = ours.get((p["backbone"], p["pretraining"]))
        rows.append({"backbone": p["backbone"], "pretraining": p["pretraining"], "setup": p["setup"],
                     "paper_common": float(p["common"]), "paper_counter": float(p["counter"]),
                     "paper_drop": float(p["drop"]),
                     "ours_common": s["common"]["value"] if s else None,
                     "ours_counter": s["counter"]["value"] if s else None,
                     "ours_drop": s["drop"]["value"] if s else None})
    return rows


# -- presentation ------------------------------------------------------------------------------------

def model_label(result: dict) -> str:
    m = result["model"]
    pre = m["pretrained"]
    if pre and (os.sep in pre or Path(pre).suffix):
        pre = Path(pre).name
    if pre:
        return f"{m['name']} ({pre})"
    return m["name"] if ":" in m["name"] else f"{m['name']} (random weights)"   # hf-hub:/local-dir: carry theirs


def _pct(entry: dict | float | None, interval: bool = True) -> str:
    if entry is None:
        return "—"
    if isinstance(entry, dict):
        if entry.get("value") is None or np.isnan(entry["value"]):
            return "—"
        if interval and "low" in entry:
            return f"{entry['value']:.2f} [{entry['low']:.2f}, {entry['high']:.2f}]"
        return f"{entry['value']:.2f}"
    return f"{entry:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()   # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def format_table(results: Sequence[dict], published: Sequence[dict] | None = None) -> str:
    """The printed report: per model its summary and per-class table; a comparison across models."""
    parts = []
    for r in results:
        d = r["dataset"]
        parts.append(f"== {model_label(r)} on {d['path']} ({d['layout']} layout; {d['classes']} classes, "
                     f"{d['images']['common']} common + {d['images']['counter']} counter photos; "
                     f"{r['images_per_second']} images/s)")
        parts.append("accuracy in %, class-balanced; [95% bootstrap interval, photos resampled within class and group, "
                     f"seed {r['bootstrap']['seed']}]")
        rows = []
        for proto in PROTOCOLS:
            s = r["summary"][proto]
            w = s["worst_group"]
            rows.append([r["protocols"][proto].split(":")[0], _pct(s["common"]), _pct(s["counter"]), _pct(s["drop"]),
                         f"{_pct(w)} ({w['class_name']}, {w['group']})"])
        parts.append(_table(["protocol", "common", "counter", "drop", "worst group"], rows))
        parts.append(f"1 vs k sets: {r['protocols']['k'].split(': ', 1)[1]}.")
        per = [[c["class_name"], f"{c['background_common'] or '?'} → {c['background_counter'] or '?'}",
                f"{c['n_common']}/{c['n_counter']}", _pct(c["common_full"]), _pct(c["counter_full"]),
                _pct(c["drop_full"]), _pct(c["common_k"]), _pct(c["counter_k"]), _pct(c["drop_k"])]
               for c in r["per_class"]]
        full, k = (r["protocols"][p].split(":")[0] for p in PROTOCOLS)
        parts.append(_table(["class", "common → counter", "n", f"common ({full})", "counter", "drop",
                             f"common ({k})", "counter", "drop"], per))
        parts.append("")
    if len(results) > 1:
        rows = [[model_label(r), _pct(r["summary"]["full"]["common"]), _pct(r["summary"]["full"]["counter"]),
                 _pct(r["summary"]["full"]["drop"]), _pct(r["summary"]["k"]["common"], False),
                 _pct(r["summary"]["k"]["counter"], False)] for r in results]
        parts.append("== models side by side")
        parts.append(_table(["model", "common", "counter", "drop", "common (1 vs k)", "counter (1 vs k)"], rows))
        parts.append("")
    if published:
        parts.append("== published figures (CounterAnimal paper v1, class-balanced %) beside ours")
        parts.append(_table(["backbone", "pretraining", "setup", "paper common", "counter", "drop",
                             "ours common", "counter", "drop"],
                            [[p["backbone"], p["pretraining"], p["setup"], _pct(p["paper_common"]),
                              _pct(p["paper_counter"]), _pct(p["paper_drop"]), _pct(p["ours_common"]),
                              _pct(p["ours_counter"]), _pct(p["ours_drop"])] for p in published]))
        parts.append("")
    return "\n".join(parts)


def summary_rows(results: Sequence[dict]) -> list[dict]:
    rows = []
    for r in results:
        for proto in PROTOCOLS:
            s = r["summary"][proto]
            row = {"model": r["model"]["name"], "pretrained": r["model"]["pretrained"],
                   "protocol": r["protocols"][proto].split(":")[0]}
            for name in SUMMARY_FIELDS:
                row[name] = s[name]["value"]
                row[f"{name}_low"] = s[name].get("low")
                row[f"{name}_high"] = s[name].get("high")
            row.update(worst_group_class=s["worst_group"]["class_name"], worst_group_group=s["worst_group"]["group"],
                       images_common=s["images_common"], images_counter=s["images_counter"])
            rows.append(row)
    return rows


def per_class_rows(results: Sequence[dict]) -> list[dict]:
    return [{"model": r["model"]["name"], "pretrained": r["model"]["pretrained"], **c}
            for r in results for c in r["per_class"]]


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def write_outputs(results: Sequence[dict], out_dir: str | Path, published: Sequence[dict] | None = None) -> list[Path]:
    """summary.csv, per_class.csv, results.json (+ published.csv; + effective_robustness.png/.svg for
    several models) under out_dir, each written atomically. Returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in [("summary.csv", _csv(summary_rows(results))), ("per_class.csv", _csv(per_class_rows(results))),
                       ("results.json", json.dumps({"results": list(results), "published": published},
                                                   indent=2, default=_json_default) + "\n")]:
        atomic.write_text(out / name, text)
        written.append(out / name)
    if published:
        atomic.write_text(out / "published.csv", _csv(list(published)))
        written.append(out / "published.csv")
    if len(results) > 1:
        from curation import plots

        points = [(model_label(r), r["summary"]["full"]["common"]["value"], r["summary"]["full"]["counter"]["value"])
                  for r in results]
        reference = ([(f"{p['backbone']} {p['pretraining']} (paper)", p["paper_common"], p["paper_counter"])
                      for p in published if p["setup"] == "1 vs 1000"] if published else None)
        written += plots.effective_robustness(points, out / "effective_robustness", reference=reference)
    return written


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return None if np.isnan(x) else float(x)
    raise TypeError(type(x).__name__)


def is_official(dataset: Dataset) -> bool:
    return dataset.layout == OFFICIAL
