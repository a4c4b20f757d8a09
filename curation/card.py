"""The release's dataset card (README.md): data gathered here, presented by templates/card.md.j2.

The card has an HF `configs:` block naming the shards of each split, so HF datasets reads the
tars (and not metadata.parquet) as the data.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from importlib import resources
from pathlib import Path

import pyarrow as pa

from curation import release_layout as layout, storage
from curation.config import RunConfig

# proposals columns the pair table shows when the run's proposals have them (schema v2 added several).
PAIR_COLUMNS = [
    ("n_common", "n common"), ("n_counter", "n counter"),
    ("acc_common", "acc common"), ("acc_counter", "acc counter"),
    ("drop", "drop (in-sample)"), ("drop_ci", "drop interval"),
    ("drop_held_out", "held-out drop"), ("drop_held_out_ci", "held-out interval"),
    ("n_groups", "groups"), ("test", "test"), ("p_adjusted", "p (adjusted)"),
    ("needs", "needs"),
]


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def _interval(lo, hi) -> str:
    return "" if lo is None or hi is None else f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def pair_rows(pairs) -> tuple[list[str], list[dict]]:
    """The pair table: header labels and per pair the cells of the columns that exist."""
    have = set().union(*(p.row.keys() for p in pairs)) if pairs else set()
    present = []
    for col, label in PAIR_COLUMNS:
        base = col[:-3] if col.endswith("_ci") else col
        need = {f"{base}_lo", f"{base}_hi"} if col.endswith("_ci") else {col}
        if need <= have and any(all(p.row.get(c) is not None for c in need) for p in pairs):
            present.append((col, label))
    rows = []
    for p in pairs:
        r = p.row
        cells = {}
        for col, _ in present:
            if col.endswith("_ci"):
                base = col[:-3]
                cells[col] = _interval(r.get(f"{base}_lo"), r.get(f"{base}_hi"))
            elif col.startswith(("acc_", "drop")):
                cells[col] = _pct(r.get(col))
            elif col == "p_adjusted":
                cells[col] = "" if r.get(col) is None else f"{r[col]:.2g}"
            else:
                cells[col] = "" if r.get(col) is None else str(r[col])
        rows.append(dict(class_name=p.class_name, label=p.label, common=p.common, counter=p.counter,
                         decision=r.get("decision"), reason=r.get("reason") or "", cells=[cells[c] for c, _ in present]))
    return [label for _, label in present], rows


def verification(run: Path) -> dict | None:
    """Labels spent and agreement, when the run went through Label Studio."""
    ann_dir = run / "annotation"
    out: dict = {}
    if (ann_dir / "annotations.parquet").exists():
        t = storage.read_table(ann_dir / "annotations.parquet", columns=["uid", "annotator", "skipped"])
        skipped = sum(bool(x) for x in t.column("skipped").to_pylist())
        out.update(labels=t.num_rows - skipped, skipped=skipped, photos=len(set(t.column("uid").to_pylist())),
                   annotators=len(set(t.column("annotator").to_pylist())))
    if (ann_dir / "annotators.parquet").exists():
        out["annotator_rows"] = storage.read_table(ann_dir / "annotators.parquet").to_pylist()
    if (ann_dir / "agreement.json").exists():
        try:
            agreement = json.loads((ann_dir / "agreement.json").read_text()).get("agreement") or {}
        except (OSError, ValueError):
            agreement = {}
        out["agreement"] = {k: v for k, v in agreement.items() if isinstance(v, dict)}
    if (ann_dir / "verification.parquet").exists():
        t = storage.read_table(ann_dir / "verification.parquet")
        if "simulated" in t.column_names:
            out["simulated"] = any(bool(x) for x in t.column("simulated").to_pylist())
        if "tasks" in t.column_names:
            out["tasks"] = int(sum(x or 0 for x in t.column("tasks").to_pylist()))
    return out or None


def context(plan, table: pa.Table, cfg: RunConfig, run: Path, name: str, version: str,
            one_vs_k: dict) -> dict:
    """Everything the card (and croissant.json) says, as plain data."""
    rows = table.to_pylist()
    per_class: dict[tuple[int, str], Counter] = defaultdict(Counter)
    for r in rows:
        per_class[(r["class_idx"], r["class_name"])][r["group"]] += 1
    pair_by_label = {p.label: p for p in plan.pairs}
    counts = [dict(label=c, class_name=n, common=k["common"], counter=k["counter"],
                   common_bg=pair_by_label[c].common if c in pair_by_label else "",
                   counter_bg=pair_by_label[c].counter if c in pair_by_label else "")
              for (c, n), k in sorted(per_class.items())]
    licenses = Counter(r["license"] for r in rows)
    attributions = Counter((r["attribution"] or "(none given)", r["license"]) for r in rows)
    excluded = Counter((e["reason"]) for e in plan.excluded)
    columns, pairs = pair_rows(plan.pairs)
    return dict(
        name=name, version=version, release=layout.release_name(name, version), run_name=cfg.name,
        verified=plan.verified, decision_model=plan.decision_model,
        n_photos=len(rows), n_classes=len(plan.pairs),
        n_split={s: sum(1 for r in rows if r["group"] == s) for s in layout.SPLITS},
        nshards=plan.nshards, splits=list(layout.SPLITS), counts=counts,
        pair_columns=columns, pairs=pairs,
        models=[dict(id=m.model_id, name=m.name, pretrained=_weights(m.pretrained)) for m in cfg.models],
        reference_model=cfg.models[0].model_id, label_space=cfg.label_space, n_labels=len(plan.label_names),
        templates=plan.templates, k=min(cfg.score.one_vs_k, len(plan.label_names)), one_vs_k_classes=len(one_vs_k),
        rule=cfg.thresholds.rule,
        thresholds=cfg.thresholds.model_dump(mode="json"),
        background_method=cfg.background_assignment.method, backgrounds=list(cfg.backgrounds),
        verification=verification(run), date=built_date(run), left_out_unsure=plan.left_out_unsure,
        licenses=sorted(licenses.items(), key=lambda kv: (-kv[1], kv[0] or "")),
        license_allow=list(cfg.license_allow),
        excluded=sorted(excluded.items(), key=lambda kv: (-kv[1], kv[0])), n_excluded=len(plan.excluded),
        excluded_licenses=sorted(Counter(e["license"] for e in plan.excluded
                                         if "license" in e["reason"]).items(), key=lambda kv: str(kv[0])),
        attributions=[dict(text=a, license=lic, n=n) for (a, lic), n in sorted(attributions.items(),
                                                                              key=lambda kv: (kv[0][0], str(kv[0][1])))],
        hf_license=hf_license(licenses),
        size_category=size_category(len(rows)),
        files=dict(classnames=layout.CLASSNAMES, templates=layout.TEMPLATES, one_vs_k=layout.ONE_VS_K,
                   metadata=layout.METADATA, checksums=layout.CHECKSUMS, croissant=layout.CROISSANT,
                   nshards=layout.NSHARDS),
        record_fields=["uid", "class_idx", "class_name", "background", "group", "url", "source", "source_id",
                       "license", "attribution", "sha256", "verified", "model_id"],
    )


def _weights(pretrained: str | None) -> str | None:
    """A tag as is; a checkpoint file by its name (the curator's folders are no part of the card)."""
    if pretrained and ("/" in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors"))):
        return f"{Path(pretrained).name} (a local checkpoint)"
    return pretrained


def built_date(run: Path) -> str | None:
    """The day the run's pairs were last selected (a property of the inputs: a re-release keeps it)."""
    from curation import manifest

    stages = manifest.read(run).get("stages") or {}
    when = (stages.get("propose") or {}).get("finished_at")
    return str(when)[:10] if when else None


def hf_license(licenses: Counter) -> str:
    """HF's license tag: the one license when all photos share a known one, else 'other'."""
    known = {"cc0": "cc0-1.0", "cc-by": "cc-by-4.0", "cc-by-sa": "cc-by-sa-4.0", "cc-by-nc": "cc-by-nc-4.0",
             "cc-by-nc-sa": "cc-by-nc-sa-4.0", "cc-by-nd": "cc-by-nd-4.0", "cc-by-nc-nd": "cc-by-nc-nd-4.0",
             "gpl-2.0-or-later": "gpl-2.0"}
    if len(licenses) == 1:
        (only,) = licenses
        return known.get(only, "other")
    return "other"


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def render(ctx: dict, template: str = "card.md.j2") -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FunctionLoader(_load_template), autoescape=False,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["md"] = _md_cell
    return env.get_template(template).render(**ctx)


def _load_template(name: str) -> str:
    return resources.files("curation").joinpath("templates", name).read_text(encoding="utf-8")


def _md_cell(value) -> str:
    """A value safe inside a Markdown table cell."""
    return str("" if value is None else value).replace("|", "\\|").replace("\n", " ")
