"""One pyarrow schema per run-directory artifact, versioned.

Each schema carries its name and version in its metadata, so a file says what it is.
A field marked ``nullable=False`` is required on every row.
"""
from __future__ import annotations

import pyarrow as pa

SCHEMA_KEY = b"counteranimal.schema"
VERSION_KEY = b"counteranimal.version"


def _schema(name: str, version: int, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={SCHEMA_KEY: name.encode(), VERSION_KEY: str(version).encode()})


# RUN/candidates/*.parquet — one row per photo to fetch; uid is stable across re-runs.
CANDIDATES = _schema("candidates", 1, [
    pa.field("uid", pa.string(), nullable=False),
    pa.field("url", pa.string(), nullable=False),
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),       # url_list | inaturalist | folder
    pa.field("source_id", pa.string(), nullable=False),    # row / photo id / relative path
    pa.field("license", pa.string()),
    pa.field("attribution", pa.string()),
])

# RUN/candidates_rejected.parquet — input rows that did not become candidates, and why
# (duplicate_url, license, …): nothing read from a source goes unrecorded.
SOURCE_REJECTS = _schema("source_rejects", 1, [
    pa.field("source", pa.string(), nullable=False),
    pa.field("source_id", pa.string(), nullable=False),
    pa.field("url", pa.string()),
    pa.field("class_name", pa.string()),
    pa.field("license", pa.string()),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("duplicate_of", pa.string()),   # uid of the candidate kept instead
])

# RUN/samples/NNNNN.parquet — one row per candidate: where it landed and its one outcome.
# status is "ok", "failed" (fetch) or "rejected" (clean); reason says why when not ok.
SAMPLES = _schema("samples", 1, [
    pa.field("uid", pa.string(), nullable=False),
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("chunk", pa.int32(), nullable=False),
    pa.field("shard", pa.string()),          # e.g. "00003.tar" when the image is stored
    pa.field("key", pa.string()),            # WebDataset __key__ inside the shard
    pa.field("status", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("original_width", pa.int32()),
    pa.field("original_height", pa.int32()),
    pa.field("bytes", pa.int64()),
    pa.field("sha256", pa.string()),
    pa.field("duplicate_of", pa.string()),
    pa.field("flags", pa.list_(pa.string())),
])

# RUN/groups/*.parquet — each clean photo's background, with how it was assigned.
GROUPS = _schema("groups", 1, [
    pa.field("uid", pa.string(), nullable=False),
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("background", pa.string(), nullable=False),
    pa.field("confidence", pa.float32()),
    pa.field("method", pa.string(), nullable=False),     # zero-shot | cluster | human
    pa.field("cluster", pa.int32()),                     # per-class cluster id, when clustered
    pa.field("model_id", pa.string()),
    pa.field("zero_shot", pa.string()),                  # the zero-shot label, whatever was assigned
    pa.field("cluster_name", pa.string()),               # the vocabulary label nearest the cluster
    pa.field("flag", pa.string()),                       # e.g. cluster_unnamed: no vocabulary label fits
])

# RUN/group_stats.parquet — accuracy per class × background × model × metric (1vN, 1v20).
GROUP_STATS = _schema("group_stats", 1, [
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("background", pa.string(), nullable=False),
    pa.field("model_id", pa.string(), nullable=False),
    pa.field("metric", pa.string(), nullable=False),     # top1 (label space) | top1_1vk
    pa.field("source", pa.string(), nullable=False),     # model | human (which labels grouped the photos)
    pa.field("n", pa.int32(), nullable=False),
    pa.field("k", pa.int32(), nullable=False),
    pa.field("acc", pa.float64(), nullable=False),
    pa.field("acc_lo", pa.float64(), nullable=False),
    pa.field("acc_hi", pa.float64(), nullable=False),
    pa.field("mean_p_true", pa.float64()),                 # mean probability of the true class
])

# RUN/attributes.parquet — Seed 2's detector: δ = acc(attribute present) − acc(absent), ranked.
ATTRIBUTE_DELTAS = _schema("attribute_deltas", 1, [
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("model_id", pa.string(), nullable=False),
    pa.field("attribute", pa.string(), nullable=False),
    pa.field("n_present", pa.int32(), nullable=False),
    pa.field("acc_present", pa.float64(), nullable=False),
    pa.field("n_absent", pa.int32(), nullable=False),
    pa.field("acc_absent", pa.float64(), nullable=False),
    pa.field("delta", pa.float64(), nullable=False),
    pa.field("p_value", pa.float64(), nullable=False),
    pa.field("rank", pa.int32(), nullable=False),
])

# RUN/proposals.parquet — per class, the proposed (common, counter) pair and the evidence.
# source says whether the row comes from model labels or human-verified labels.
PROPOSALS = _schema("proposals", 1, [
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),     # model | human
    pa.field("model_id", pa.string()),
    pa.field("common", pa.string()),
    pa.field("counter", pa.string()),
    pa.field("n_common", pa.int32()),
    pa.field("n_counter", pa.int32()),
    pa.field("acc_common", pa.float64()),
    pa.field("acc_common_lo", pa.float64()),
    pa.field("acc_common_hi", pa.float64()),
    pa.field("acc_counter", pa.float64()),
    pa.field("acc_counter_lo", pa.float64()),
    pa.field("acc_counter_hi", pa.float64()),
    pa.field("drop", pa.float64()),
    pa.field("drop_lo", pa.float64()),
    pa.field("drop_hi", pa.float64()),
    pa.field("p_value", pa.float64()),
    pa.field("p_adjusted", pa.float64()),
    pa.field("decision", pa.string(), nullable=False),   # kept | dropped
    pa.field("reason", pa.string(), nullable=False),     # why kept or dropped, in words
])

# RUN/clean/NNNNN.parquet — per shard, what the clean stage saw in each stored image (before dedupe).
IMAGE_CHECKS = _schema("image_checks", 1, [
    pa.field("uid", pa.string(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("key", pa.string()),
    pa.field("reason", pa.string()),          # null when the image passed: undecodable | truncated | too_small | aspect_ratio | missing_in_shard
    pa.field("detail", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("bytes", pa.int64()),
    pa.field("sha256", pa.string()),
    pa.field("phash", pa.uint64()),           # 64-bit DCT perceptual hash
    pa.field("phash_crops", pa.list_(pa.uint64())),  # pHash of central crops (4, 8, 12% off each side)
])

# RUN/scores/NNNNN.parquet — per shard, one row per (sample, model): CLIP zero-shot results.
# Indices are into the run's label space (ImageNet-1K or the run's classes) and background list.
SCORES = _schema("scores", 1, [
    pa.field("uid", pa.string(), nullable=False),
    pa.field("model_id", pa.string(), nullable=False),
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("label_space", pa.string(), nullable=False),   # imagenet1k | classes
    pa.field("true_label", pa.int32(), nullable=False),     # the sample's class in the label space
    pa.field("top1", pa.int32(), nullable=False),
    pa.field("top1_name", pa.string(), nullable=False),
    pa.field("correct", pa.bool_(), nullable=False),
    pa.field("p_true", pa.float32(), nullable=False),
    pa.field("true_rank", pa.int32(), nullable=False),      # 1 = top-1
    pa.field("margin", pa.float32(), nullable=False),       # p_true - best other p (> 0 iff correct)
    pa.field("top5", pa.list_(pa.int32()), nullable=False),
    pa.field("top5_p", pa.list_(pa.float32()), nullable=False),
    pa.field("background", pa.string(), nullable=False),   # most likely background prompt
    pa.field("background_p", pa.list_(pa.float32()), nullable=False),  # over config backgrounds, in order
    pa.field("p_subject", pa.float32(), nullable=False),    # P(class prompt) against the background prompts
    pa.field("p_animal", pa.float32()),     # P(best label prompt) against the background prompts; null: scored before it existed
    pa.field("embedding", pa.list_(pa.float16()), nullable=False),     # L2-normalised image embedding
    pa.field("top1_1vk", pa.int32()),                       # "1 vs 20": top-1 among the class's k closest labels
    pa.field("correct_1vk", pa.bool_()),
])

# RUN/scores/text/<model>.parquet — the label-space and background text embeddings a model used.
TEXT_EMBEDDINGS = _schema("text_embeddings", 1, [
    pa.field("model_id", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),          # label | background
    pa.field("index", pa.int32(), nullable=False),
    pa.field("name", pa.string(), nullable=False),
    pa.field("embedding", pa.list_(pa.float32()), nullable=False),
])

# RUN/annotation/gold.parquet — known answers for calibration tasks (written by the curator, or by
# the planted world where the truth is known by construction).
ANNOTATION_GOLD = _schema("annotation_gold", 1, [
    pa.field("uid", pa.string(), nullable=False),
    pa.field("background", pa.string()),                  # null: background not known
    pa.field("is_class", pa.string()),                    # yes | no; null: not known
])

# RUN/annotation/tasks.parquet — every photo chosen for human verification and its one outcome.
# role: common | counter (member of a proposed group), flagged (clean-stage flags), calibration.
# status: pushed (task_id set) | no_image (not in any shard) | pending (not pushed yet).
ANNOTATION_TASKS = _schema("annotation_tasks", 1, [
    pa.field("uid", pa.string(), nullable=False),
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("role", pa.string(), nullable=False),
    pa.field("shard", pa.string()),
    pa.field("key", pa.string()),
    pa.field("image", pa.string()),                       # path relative to RUN/annotation/images
    pa.field("model_background", pa.string()),
    pa.field("model_is_class", pa.string()),              # yes | no from the model's top-1, null if unscored
    pa.field("score", pa.float32()),                      # background confidence shown with the prediction
    pa.field("model_id", pa.string()),
    pa.field("flags", pa.list_(pa.string())),
    pa.field("gold_background", pa.string()),
    pa.field("gold_is_class", pa.string()),
    pa.field("task_id", pa.int64()),
    pa.field("status", pa.string(), nullable=False),
])

# RUN/annotation/annotations.parquet — raw annotations as exported, mapped back to sample uids.
# on_server is false for annotations kept from an earlier pull whose task was deleted by hand.
ANNOTATIONS = _schema("annotations", 1, [
    pa.field("annotation_id", pa.int64(), nullable=False),
    pa.field("task_id", pa.int64(), nullable=False),
    pa.field("uid", pa.string(), nullable=False),
    pa.field("annotator", pa.string(), nullable=False),   # the annotator's e-mail
    pa.field("skipped", pa.bool_(), nullable=False),
    pa.field("background", pa.string()),
    pa.field("is_class", pa.string()),                    # yes | no | unsure
    pa.field("flags", pa.list_(pa.string())),
    pa.field("lead_time", pa.float64()),
    pa.field("created_at", pa.string()),
    pa.field("updated_at", pa.string()),
    pa.field("on_server", pa.bool_(), nullable=False),
])

# RUN/annotation/verdicts.parquet — per photo, the aggregated human votes.
# status: verified (enough votes, background and class resolved) | tie | pending (too few votes).
VERDICTS = _schema("verdicts", 1, [
    pa.field("uid", pa.string(), nullable=False),
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("role", pa.string()),
    pa.field("n_votes", pa.int32(), nullable=False),      # annotations that were not skipped
    pa.field("background", pa.string()),                  # majority; null on a tie or no votes
    pa.field("background_agreement", pa.float64()),       # share of votes for the majority
    pa.field("is_class", pa.string()),
    pa.field("is_class_agreement", pa.float64()),
    pa.field("flags", pa.list_(pa.string())),             # flags ticked by more than half the voters
    pa.field("model_background", pa.string()),
    pa.field("status", pa.string(), nullable=False),
])

# RUN/annotation/annotators.parquet — per annotator: volume and accuracy on calibration tasks.
ANNOTATORS = _schema("annotators", 1, [
    pa.field("annotator", pa.string(), nullable=False),
    pa.field("n_annotations", pa.int32(), nullable=False),
    pa.field("n_skipped", pa.int32(), nullable=False),
    pa.field("n_calibration", pa.int32(), nullable=False),
    pa.field("background_accuracy", pa.float64()),
    pa.field("is_class_accuracy", pa.float64()),
])

SCHEMAS: dict[str, pa.Schema] = {
    "candidates": CANDIDATES,
    "samples": SAMPLES,
    "source_rejects": SOURCE_REJECTS,
    "groups": GROUPS,
    "proposals": PROPOSALS,
    "group_stats": GROUP_STATS,
    "attribute_deltas": ATTRIBUTE_DELTAS,
    "image_checks": IMAGE_CHECKS,
    "scores": SCORES,
    "text_embeddings": TEXT_EMBEDDINGS,
    "annotation_gold": ANNOTATION_GOLD,
    "annotation_tasks": ANNOTATION_TASKS,
    "annotations": ANNOTATIONS,
    "verdicts": VERDICTS,
    "annotators": ANNOTATORS,
}

SAMPLE_STATUSES = ("ok", "failed", "rejected")


def version_of(schema: pa.Schema) -> int:
    return int(schema.metadata[VERSION_KEY])
