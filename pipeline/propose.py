"""Backgrounds and proposals: two composite PTransforms over curation.backgrounds and curation.propose.

    scores ─▶ by class ─▶ assign backgrounds (zero-shot + clusters) ─▶ RUN/groups/model-CCCC.parquet
    groups ⋈ scores (by uid) ─▶ counts per class × background × model ─▶ RUN/group_stats.parquet
                                                                     ─▶ RUN/proposals.parquet
    scores (embeddings) ─▶ counts per class × extra attribute × model ─▶ RUN/attributes.parquet (with
                                                                        the backgrounds' δ)

Groups are written one file per class, so the stage is idempotent and a re-run rewrites the
same files. Proposals read model groups and, once annotators have verified photos, human groups
(RUN/groups/human.parquet, method 'human') — both end up side by side in proposals.parquet.
"""
from __future__ import annotations

import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import schemas
from curation import arrays, atomic, attributes, backgrounds, config, manifest, stats, storage, zeroshot
from curation.config import RunConfig
from curation.run_paths import RunPaths
from curation.errors import UserError
from curation.propose import AttributeCount, GroupCount, Rule, agree_across_models, attribute_deltas, propose
from pipeline.score import read_text_embeddings, text_path
from pipeline.worker_errors import marked, user_errors_from_workers

METRICS = {"top1": "correct", "top1_1vk": "correct_1vk"}
P_UNITS = 10**9    # p(true) is summed as integers: the same sums in any order, on every runner


def score_files(run_dir: Path) -> list:
    # Path objects, not strings: a URL path carries its storage options to the workers (curation/storage.py)
    return sorted(p for p in RunPaths(run_dir).scores.glob("*.parquet") if not p.name.startswith("."))


def read_scores(path: str, columns: list[str], model_id: str | None = None) -> Iterable[dict]:
    table = storage.read_table(path, columns=columns + (["model_id"] if "model_id" not in columns else []))
    if model_id is not None:
        table = table.filter(pc.equal(table.column("model_id"), model_id))
    yield from table.to_pylist()


# -- backgrounds ---------------------------------------------------------------------------------

class AssignClass(beam.DoFn):
    """One class's scores -> its groups file. With class-naming prompts (prompts.class_backgrounds) the
    worker loads the model once (setup) and encodes them itself: the launcher loads no model."""

    def __init__(self, run_dir: str, names: list[str], class_names: dict[int, str],
                 class_dirs: dict[int, list[float]], settings, model_id: str, prompts: "PromptRequest | None"):
        self.run_dir, self.names, self.class_names, self.class_dirs = run_dir, names, class_names, class_dirs
        self.settings, self.model_id, self.request = settings, model_id, prompts
        self.prompts: ClassPrompts | None = None

    def setup(self):
        if self.request is not None:
            try:
                self.prompts = class_prompts(config.parse(self.request.cfg_json), self.model_id,
                                             np.asarray(self.request.generic, np.float32))
            except UserError as exc:
                raise marked(exc) from None

    def process(self, element):
        (class_idx, label), rows = element
        rows = sorted(rows, key=lambda r: r["uid"])   # runner order must not change clusters
        embeddings = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        if self.prompts is not None and class_idx in self.prompts.banks:
            probs = zeroshot.probabilities(embeddings, self.prompts.banks[class_idx], self.prompts.logit_scale)
        else:
            probs = np.asarray([r["background_p"] for r in rows], dtype=np.float32)
        assigned = backgrounds.assign_class([r["uid"] for r in rows], embeddings, probs, self.names,
                                            self.class_dirs.get(label), self.settings)
        for a in assigned:
            a.update(class_idx=class_idx, class_name=self.class_names.get(class_idx, str(class_idx)),
                     model_id=self.model_id)
        table = schemas.conform(pa.Table.from_pylist(assigned), "groups", f"groups of class {class_idx}")
        atomic.write_parquet(RunPaths(self.run_dir).model_groups(class_idx), table)
        yield class_idx, len(assigned)


class AssignBackgrounds(beam.PTransform):
    """Scores of one model → a background per photo, written per class."""

    def __init__(self, run_dir: Path, files: list[str], model_id: str, names: list[str],
                 class_names: dict[int, str], class_dirs: dict[int, list[float]], settings: backgrounds.Settings,
                 prompts: "PromptRequest | None" = None):
        super().__init__()
        self.run_dir, self.files, self.model_id = run_dir, files, model_id
        self.names, self.class_names, self.class_dirs, self.settings = names, class_names, class_dirs, settings
        self.prompts = prompts

    def expand(self, pbegin):
        columns = ["uid", "class_idx", "embedding", "background_p", "true_label"]
        return (pbegin
                | "ScoreFiles" >> beam.Create(self.files)
                | "ReadScores" >> beam.FlatMap(read_scores, columns, self.model_id)
                | "ByClass" >> beam.Map(lambda r: ((r["class_idx"], r["true_label"]), r))
                | "Group" >> beam.GroupByKey()
                | "Assign" >> beam.ParDo(AssignClass(self.run_dir, self.names, self.class_names,
                                                     self.class_dirs, self.settings, self.model_id, self.prompts)))


def run_backgrounds(run_dir: Path, cfg: RunConfig, options, say=print) -> dict:
    files = score_files(run_dir)
    if not files:
        raise UserError("no scores to assign backgrounds from", where=str(RunPaths(run_dir).scores),
                        hint="Run the score stage first.")
    model_id = cfg.background_assignment.model or cfg.models[0].model_id
    if model_id not in {m.model_id for m in cfg.models}:
        raise UserError(f"background_assignment.model {model_id!r} is not one of the models", where="config.yaml")
    started = time.monotonic()
    _, labels = read_text_embeddings(run_dir, model_id, "label")
    names, generic = read_text_embeddings(run_dir, model_id, "background")
    if names != list(cfg.backgrounds):
        raise UserError(f"the scores were made with backgrounds {names}, the config now lists {cfg.backgrounds}",
                        where=str(text_path(run_dir, model_id)), hint="Re-run the score stage.")
    groups_dir = RunPaths(run_dir).groups
    for stale in groups_dir.glob("model-*.parquet"):
        stale.unlink()
    atomic.clean_temp_files(groups_dir)
    settings = backgrounds.Settings.from_config(cfg.background_assignment)
    class_names = {cfg.class_index(c): c.name for c in cfg.classes}
    class_dirs = {i: labels[i].tolist() for i in range(len(labels))}   # label-space index → text direction
    prompts = None
    if cfg.background_assignment.prompts != "generic" and cfg.prompts.class_backgrounds:
        prompts = PromptRequest(cfg.model_dump(mode="json", by_alias=True), generic.tolist())
    with user_errors_from_workers(), beam.Pipeline(options=options) as p:
        _ = p | "Backgrounds" >> AssignBackgrounds(run_dir, files, model_id, names, class_names, class_dirs,
                                                   settings, prompts)
    groups = schemas.read_folder(groups_dir, "groups")
    groups = groups.filter(pc.not_equal(groups.column("method"), "human"))
    counts = {"photos": groups.num_rows, "classes": len(set(groups.column("class_idx").to_pylist())),
              "by_method": manifest.count_by(groups, "method"),
              "by_background": manifest.count_by(groups, "background"),
              "unnamed_clusters": int(pc.sum(pc.equal(groups.column("flag"), backgrounds.UNNAMED)).as_py() or 0)}
    manifest.record_stage(run_dir, "backgrounds", config_digest=cfg.digest(), counts=counts,
                          seconds=time.monotonic() - started)
    say(f"backgrounds: {counts['photos']} photos of {counts['classes']} classes grouped "
        f"({', '.join(f'{k} {v}' for k, v in counts['by_method'].items())}) -> {groups_dir}")
    return counts


@dataclass(frozen=True)
class PromptRequest:
    """What a worker needs to build ClassPrompts itself: the config and the generic background bank."""
    cfg_json: dict
    generic: list


@dataclass(frozen=True)
class ClassPrompts:
    """Per class (class_idx), background text embeddings whose prompts name the class."""
    banks: dict[int, np.ndarray]
    logit_scale: float


def class_prompts(cfg: RunConfig, model_id: str, generic: np.ndarray) -> ClassPrompts | None:
    """Encode prompts.class_backgrounds (a few prompts per class × background), once per worker."""
    mode = cfg.background_assignment.prompts
    if mode == "generic" or not cfg.prompts.class_backgrounds:
        return None
    from curation import clip_models

    spec = next(m for m in cfg.models if m.model_id == model_id)
    clip = clip_models.load(spec.name, spec.pretrained, device=cfg.score.device, precision=cfg.score.precision)
    bank = zeroshot.class_background_bank(clip, [c.name for c in cfg.classes], cfg.backgrounds,
                                          cfg.prompts.class_backgrounds)
    if mode == "both":
        bank = bank + generic[None, :, :]
        bank /= np.linalg.norm(bank, axis=-1, keepdims=True)
    return ClassPrompts({cfg.class_index(c): bank[i] for i, c in enumerate(cfg.classes)},
                        float(clip.model.logit_scale.exp().item()))


# -- proposals -----------------------------------------------------------------------------------

class CountGroups(beam.PTransform):
    """groups ⋈ scores ⋈ review flags by uid → ((source, model, metric, class, background), (n, k)).

    The job graph carries file names; each step reads its groups, scores or samples file itself."""

    def __init__(self, group_files: list[str], files: list[str], samples: list[str], min_confidence: float):
        super().__init__()
        self.group_files, self.files, self.samples, self.min_confidence = group_files, files, samples, min_confidence

    def expand(self, pbegin):
        groups = (pbegin
                  | "GroupFiles" >> beam.Create(self.group_files)
                  | "ReadGroups" >> beam.FlatMap(read_groups, self.min_confidence))
        scores = (pbegin
                  | "ScoreFiles" >> beam.Create(self.files)
                  | "ReadScores" >> beam.FlatMap(read_scores, ["uid", "model_id", "correct", "correct_1vk", "p_true"])
                  | "ScoreByUid" >> beam.Map(lambda s: (s["uid"], s)))
        flagged = (pbegin
                   | "SamplesFiles" >> beam.Create(self.samples)
                   | "ReadFlags" >> beam.FlatMap(flagged_uids))
        return ({"group": groups, "score": scores, "flagged": flagged}
                | "Join" >> beam.CoGroupByKey()
                | "Cells" >> beam.FlatMap(_cells)
                | "Count" >> beam.CombinePerKey(_sum_tuples))


GROUP_COLUMNS = ["uid", "class_idx", "class_name", "background", "method"]


def read_groups(path: str, min_confidence: float) -> Iterable[tuple[str, dict]]:
    """One groups file's rows that count (confident_groups) -> (uid, row)."""
    t, _ = confident_groups(schemas.read(path, "groups"), min_confidence)
    for row in t.select(GROUP_COLUMNS).to_pylist():
        yield row["uid"], row


def flagged_uids(path: str) -> Iterable[tuple[str, bool]]:
    """One samples file's photos that clean or score flagged for review -> (uid, True)."""
    t = storage.read_table(path, columns=["uid", "flags"])
    for uid, flags in zip(t.column("uid").to_pylist(), t.column("flags").to_pylist()):
        if flags:
            yield uid, True


class CountAttributes(beam.PTransform):
    """scores (embeddings) → ((model, class_idx, attribute, present), (n, k)) for prompts.attributes."""

    def __init__(self, files: list[str], cfg: RunConfig):
        super().__init__()
        self.files, self.cfg_json = files, cfg.model_dump(mode="json", by_alias=True)

    def expand(self, pbegin):
        return (pbegin
                | "ScoreFiles" >> beam.Create(self.files)
                | "Cells" >> beam.ParDo(AttributeCells(self.cfg_json))
                | "Count" >> beam.CombinePerKey(_sum_tuples))


class AttributeCells(beam.DoFn):
    """A score file -> its attribute counts; the worker loads the models and encodes the attribute
    prompts once (setup): the launcher loads no model."""

    def __init__(self, cfg_json: dict):
        self.cfg_json = cfg_json

    def setup(self):
        cfg = config.parse(self.cfg_json)
        try:
            self.banks = attribute_banks(cfg)
        except UserError as exc:
            raise marked(exc) from None
        self.names = list(cfg.prompts.attributes)

    def process(self, path: str):
        yield from _attribute_cells(path, self.banks, self.names)


def _attribute_cells(path: str, banks: dict[str, dict[int, np.ndarray]], names: list[str]):
    """One score file's counts, per model and class at once (vectorised)."""
    t = storage.read_table(path, columns=["model_id", "class_idx", "correct", "embedding"])
    by: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(t.column("model_id").to_pylist(), t.column("class_idx").to_pylist())):
        by[key].append(i)
    for (model_id, class_idx), rows in sorted(by.items()):
        bank = banks.get(model_id, {}).get(class_idx)
        if bank is None:
            continue
        part = t.take(rows)
        emb = arrays.embeddings(part.column("embedding"))
        correct = np.asarray(part.column("correct").to_pylist(), dtype=bool)
        has = attributes.presence(emb, bank)
        for j, name in enumerate(names):
            for present in (True, False):
                mask = has[:, j] == present
                if mask.any():
                    yield (model_id, class_idx, name, present), (int(mask.sum()), int(correct[mask].sum()))


def attribute_banks(cfg: RunConfig) -> dict[str, dict[int, np.ndarray]]:
    """Per model, per class: the attribute prompts' text embeddings (empty without prompts.attributes)."""
    if not cfg.prompts.attributes:
        return {}
    from curation import clip_models

    out = {}
    names = [c.name for c in cfg.classes]
    for m in cfg.models:
        clip = clip_models.load(m.name, m.pretrained, device=cfg.score.device, precision=cfg.score.precision)
        bank = attributes.attribute_bank(clip, names, cfg.prompts.attributes, cfg.prompts.attribute_template,
                                         cfg.prompts.attribute_baseline)
        out[m.model_id] = {cfg.class_index(c): bank[i] for i, c in enumerate(cfg.classes)}
    return out


def _sum_tuples(values) -> tuple:
    """Element-wise sums of count tuples ((n, k) or (n, k, p)); Beam also applies it to partial sums."""
    return tuple(map(sum, zip(*values)))


def _cells(joined):
    """One joined photo → its count cells: per labels source, counting view, model and metric.

    Views: "all" photos, and "unflagged" (clean's review flags left out), so the flagged-photo
    policy (thresholds.flagged) is applied when pairs are chosen. The value carries the photo's
    fold too (a stable half of the photos by uid) for the held-out drop.
    """
    uid, sides = joined
    fold = zlib.crc32(uid.encode()) & 1
    flagged = any(sides.get("flagged", ()))
    for g in sides["group"]:
        human = g["method"] == "human"
        views = ("all",) if human or flagged or g.get("flagged") else ("all", "unflagged")
        for s in sides["score"]:
            for metric, column in METRICS.items():
                if s[column] is None:
                    continue
                right = int(bool(s[column]))
                value = (1, right, round(P_UNITS * (s["p_true"] or 0.0)),
                         1 - fold, right * (1 - fold), fold, right * fold)
                for view in views:
                    yield (("human" if human else "model", view, s["model_id"], metric,
                            g["class_idx"], g["class_name"], g["background"]), value)


def select_pairs(cells: dict[tuple, tuple], cfg: RunConfig) -> tuple[list[dict], list[dict]]:
    """Counts per cell → (group_stats rows, proposals rows) for every source and model."""
    rule = Rule.from_config(cfg.thresholds)
    stat_rows, proposal_rows = [], []
    by_key: dict[tuple, list[GroupCount]] = defaultdict(list)
    for (source, view, model_id, metric, class_idx, class_name, bg), value in sorted(cells.items()):
        n, k, p_units, n0, k0, n1, k1 = value
        p = p_units / P_UNITS
        if view == "all":
            lo, hi = stats.wilson(k, n, rule.alpha)
            stat_rows.append(dict(class_idx=class_idx, class_name=class_name, background=bg, model_id=model_id,
                                  metric=metric, source=source, n=n, k=k, acc=k / n, acc_lo=lo, acc_hi=hi,
                                  mean_p_true=p / n))
        by_key[(source, view, model_id, metric)].append(
            GroupCount(class_idx, class_name, bg, n, k, p, folds=((n0, k0), (n1, k1))))
    policy = cfg.thresholds.flagged
    for source in ("model", "human"):
        scored = {m for (s, _, m, metric) in by_key if s == source and metric == "top1"}
        # Config order: the first model is the decision model, whose figures a consensus row shows.
        models = [m.model_id for m in cfg.models if m.model_id in scored] + sorted(
            scored - {m.model_id for m in cfg.models})
        per_model = {}
        for m in models:
            if source == "human" or policy == "include":
                rows = propose(by_key[(source, "all", m, "top1")], rule, model_id=m, source=source)
            elif policy == "exclude":
                rows = propose(by_key[(source, "unflagged", m, "top1")], rule, model_id=m, source=source)
            else:
                rows = flags_both_ways(propose(by_key[(source, "all", m, "top1")], rule, model_id=m, source=source),
                                       propose(by_key[(source, "unflagged", m, "top1")], rule, model_id=m,
                                               source=source))
            for r in rows:
                r["flags_policy"] = "human labels" if source == "human" else policy
            per_model[m] = rows
        for rows in per_model.values():
            proposal_rows.extend(rows)
        if len(per_model) > 1 and cfg.thresholds.require_all_models:
            proposal_rows.extend(dict(r, source=source) for r in agree_across_models(per_model))
    return stat_rows, proposal_rows


def flags_both_ways(with_flagged: list[dict], without: list[dict]) -> list[dict]:
    """thresholds.flagged "both": a pair stands only when it holds with and without flagged photos;
    the figures are those with every photo."""
    other = {r["class_idx"]: r for r in without}
    out = []
    for r in with_flagged:
        o = other.get(r["class_idx"])
        if r["decision"] == "kept" and not (o and o["decision"] == "kept"
                                            and (o["common"], o["counter"]) == (r["common"], r["counter"])):
            why = (f"{o['decision']} {o['common']} → {o['counter']}" if o and o["common"] else
                   (o["reason"] if o else "no unflagged photos"))
            r = dict(r, decision="dropped",
                     reason=f"{r['reason']}; does not hold without the photos clean flagged ({why})")
        out.append(r)
    return out


def write_selection(cells: list, run_dir: str, cfg: RunConfig, attribute_cells: list = (),
                    verified: list[dict] | None = None) -> int:
    """The pipeline's last step: counts → group_stats, attribute deltas and proposals, written.

    ``verified``: the verification loop's human rows (verified_rows), which replace the counted ones.
    """
    stat_rows, proposal_rows = select_pairs(dict(cells), cfg)
    if verified is not None:
        proposal_rows = [r for r in proposal_rows if r["source"] != "human"] + verified
    class_names = {cfg.class_index(c): c.name for c in cfg.classes}
    deltas = []
    for m in cfg.models:
        model_groups = [GroupCount(r["class_idx"], r["class_name"], r["background"], r["n"], r["k"])
                        for r in stat_rows if (r["source"], r["model_id"], r["metric"]) == ("model", m.model_id, "top1")]
        extra = [AttributeCount(c, class_names.get(c, str(c)), a, present, n, k)
                 for (model_id, c, a, present), (n, k) in attribute_cells if model_id == m.model_id]
        deltas.extend(dict(d, model_id=m.model_id)
                      for d in attribute_deltas(model_groups, list(cfg.backgrounds), extra))
    run_dir = storage.path(run_dir)
    atomic.write_parquet(RunPaths(run_dir).group_stats, _table(stat_rows, "group_stats"))
    atomic.write_parquet(RunPaths(run_dir).attributes, _table(deltas, "attribute_deltas"))
    atomic.write_parquet(RunPaths(run_dir).proposals, _table(proposal_rows, "proposals"))
    return len(proposal_rows)


def run_propose(run_dir: Path, cfg: RunConfig, options, say=print) -> dict:
    started = time.monotonic()
    groups = schemas.read_folder(RunPaths(run_dir).groups, "groups")
    if groups.num_rows == 0:
        raise UserError("no background groups to propose pairs from", where=str(RunPaths(run_dir).groups),
                        hint="Run the backgrounds stage first.")
    unsure = groups.num_rows - confident_groups(groups, cfg.thresholds.min_background_confidence)[0].num_rows
    # Path objects, not strings: a URL path carries its storage options to the workers (curation/storage.py)
    group_files = sorted(p for p in RunPaths(run_dir).groups.glob("*.parquet") if not p.name.startswith("."))
    samples_files = sorted(RunPaths(run_dir).samples.glob("[0-9]*.parquet"))
    verified = verified_rows(run_dir, cfg)
    with user_errors_from_workers(), beam.Pipeline(options=options) as p:
        extra = (p | "CountAttributes" >> CountAttributes(score_files(run_dir), cfg)
                 if cfg.prompts.attributes else p | "NoAttributes" >> beam.Create([]))
        _ = (p
             | "CountGroups" >> CountGroups(group_files, score_files(run_dir), samples_files,
                                            cfg.thresholds.min_background_confidence)
             | "Collect" >> beam.combiners.ToList()
             | "Select" >> beam.Map(write_selection, run_dir, cfg, beam.pvalue.AsList(extra), verified))
    proposal_rows = schemas.read(RunPaths(run_dir).proposals, "proposals").to_pylist()
    final = _final_rows(proposal_rows, cfg)
    kept = [r for r in final if r["decision"] == "kept"]
    undecided = [r for r in final if r["decision"] == "undecided"]
    held_out = [r["drop_held_out"] for r in kept if r.get("drop_held_out") is not None]
    counts = {"classes": len(final), "kept": len(kept), "undecided": len(undecided),
              "dropped": len(final) - len(kept) - len(undecided), "unsure_photos": unsure,
              "mean_drop_kept": round(float(np.mean([r["drop"] for r in kept])), 4) if kept else None,
              "mean_drop_kept_held_out": round(float(np.mean(held_out)), 4) if held_out else None}
    if cfg.thresholds.rule == "paper":
        counts["also_kept_by_strict_rule"] = sum(r.get("strict_decision") == "kept" for r in kept)
    manifest.record_stage(run_dir, "propose", config_digest=cfg.digest(), counts=counts,
                          seconds=time.monotonic() - started)
    say(summary(final, counts, cfg, unsure) + f"\n  -> {run_dir / 'proposals.parquet'}")
    return counts


def summary(final: list[dict], counts: dict, cfg: RunConfig, unsure: int) -> str:
    """The propose stage's lines: kept pairs with their evidence, then what would decide the rest."""
    t = cfg.thresholds
    left_out = (f"; {unsure} photos with background confidence < {t.min_background_confidence:g} "
                "left out of the counts" if unsure else "")
    lines = [f"propose: {counts['kept']} of {counts['classes']} classes kept, {counts['undecided']} undecided, "
             f"{counts['dropped']} dropped ({t.rule} rule, groups ≥ {t.describe_group_size()}, "
             f"flagged photos: {t.flagged}{left_out})"]
    if counts.get("mean_drop_kept") is not None:
        held = counts.get("mean_drop_kept_held_out")
        lines.append(f"  mean drop of kept pairs: {100 * counts['mean_drop_kept']:.1f} points in-sample"
                     + (f", {100 * held:.1f} held out (pair chosen on half the photos, measured on the other)"
                        if held is not None else ""))
    if "also_kept_by_strict_rule" in counts and counts["kept"]:
        lines.append(f"  the default strict rule also keeps {counts['also_kept_by_strict_rule']} of these "
                     f"{counts['kept']} pairs")
    too_small = sum(r["drop"] is None and r["decision"] == "dropped" for r in final)
    if t.rule == "paper" and too_small:
        lines.append(f"  {too_small} classes have fewer than two groups of ≥ {t.describe_group_size()} (the "
                     "paper's classes had 300–800 photos); set thresholds.min_group_size to lower the floor, "
                     "or use rule: strict")
    lines += [f"  {r['class_name']}: {r['reason']}" for r in final if r["decision"] == "kept"][:50]
    needs = [r for r in final if r["decision"] == "undecided"]
    if needs:
        lines.append("  undecided (groups too small to tell) — to decide them:")
        lines += [f"    {r['class_name']}: {r['needs'] or r['reason']}" for r in needs[:50]]
    return "\n".join(lines)


def verified_rows(run_dir: Path, cfg: RunConfig) -> list[dict] | None:
    """The human rows of proposals.parquet, once annotators have labelled: the verification loop's
    pairs (annotation/loop.py), from the post-stratified group accuracies of annotation/estimate.py.

    Counting the labelled photos as they come would bias every group toward the strata sampled
    most; so the propose stage takes the loop's estimated pairs, the same ones `annotate status`
    shows and `release` ships. None before any pull.
    """
    if not (RunPaths(run_dir).annotation / "verdicts.parquet").is_file():
        return None
    from annotation import loop

    lv = loop.load_state(run_dir, cfg)
    return [dict(cv.row, source="human", flags_policy="human labels, post-stratified estimate")
            for _, cv in sorted(lv.classes.items())]


def confident_groups(groups: pa.Table, min_confidence: float) -> tuple[pa.Table, int]:
    """Groups that count: human labels, and model labels at least ``min_confidence`` sure."""
    if min_confidence <= 0:
        return groups, 0
    keep = pc.or_(pc.equal(groups.column("method"), "human"),
                  pc.greater_equal(pc.fill_null(groups.column("confidence"), 0.0), min_confidence))
    kept = groups.filter(keep)
    return kept, groups.num_rows - kept.num_rows


def _final_rows(rows: list[dict], cfg: RunConfig) -> list[dict]:
    """The rows that decide: model labels, the consensus when several models must agree."""
    model_rows = [r for r in rows if r["source"] == "model"]
    if len(cfg.models) > 1 and cfg.thresholds.require_all_models:
        return [r for r in model_rows if r["model_id"] == "all"]
    first = cfg.models[0].model_id
    return [r for r in model_rows if r["model_id"] == first]


def _table(rows: list[dict], name: str) -> pa.Table:
    if not rows:
        return schemas.SCHEMAS[name].empty_table()
    return schemas.conform(pa.Table.from_pylist(rows), name)
