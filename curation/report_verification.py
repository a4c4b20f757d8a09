"""The report's "Human verification" section: verified pairs beside the model's, from the files
`counteranimal annotate pull` writes (annotation/pull.py). Plain data; no Label Studio here.

Reads RUN/annotation/verification.parquet (per class: labels spent, model and verified pair, the
loop's state, what changed), estimates.parquet (estimated group accuracies), annotators.parquet
(accuracy on known answers), agreement.json (Krippendorff's alpha) and verdicts.parquet (whether
a prediction was shown). Absent files: the section is left out.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import schemas


def verification_section(page) -> dict | None:
    run: Path = Path(page.data.run)
    folder = run / "annotation"
    if not (folder / "verification.parquet").exists():
        return None
    rows = schemas.read(folder / "verification.parquet", "verification").to_pylist()
    if not rows:
        return None
    estimates: dict[str, list[dict]] = defaultdict(list)
    if (folder / "estimates.parquet").exists():
        for e in schemas.read(folder / "estimates.parquet", "human_estimates").to_pylist():
            estimates[e["class_name"]].append(e)
    people = schemas.read(folder / "annotators.parquet", "annotators").to_pylist() \
        if (folder / "annotators.parquet").exists() else []
    agreement = json.loads((folder / "agreement.json").read_text()) if (folder / "agreement.json").exists() else {}
    shown = 0
    if (folder / "verdicts.parquet").exists():
        shown = sum(bool(v) for v in schemas.read(folder / "verdicts.parquet", "verdicts")
                    .column("prediction_shown").to_pylist())
    simulated = any(r["simulated"] for r in rows)
    for r in rows:
        r["estimates"] = sorted(estimates.get(r["class_name"], []), key=lambda e: e["acc"])
        r["same"] = (r["model_common"], r["model_counter"], r["model_decision"] == "kept") == \
            (r["human_common"], r["human_counter"], r["human_decision"] == "kept")
    photos, labeled, tasks = (sum(r[k] for r in rows) for k in ("photos", "labeled", "tasks"))
    alpha = {k: (agreement.get("agreement") or {}).get(k, {}).get("alpha") for k in ("background", "is_class")}
    budget = page.data.config.annotation.budget
    return dict(
        subtitle="SIMULATED annotators" if simulated else "human labels",
        simulated=simulated, rows=rows, photos=photos, labeled=labeled, tasks=tasks, budget=budget,
        share=tasks / photos if photos else None, alpha=alpha, annotators=people, prediction_shown=shown,
        changed=sum(not r["same"] for r in rows),
        states={s: sum(r["state"] == s for r in rows) for s in sorted({r["state"] for r in rows})})
