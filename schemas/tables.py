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
# v2: drop is the in-sample drop (best minus worst on the groups chosen for being best and worst);
# drop_lo/drop_hi, under the strict rule, a simultaneous interval over every pair of the class's
# groups (it holds for the pair picked); drop_held_out* the cross-fitted out-of-sample drop;
# decision kept | dropped | undecided (needs* say which photos would decide it).
PROPOSALS = _schema("proposals", 2, [
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
    pa.field("decision", pa.string(), nullable=False),   # kept | dropped | undecided
    pa.field("reason", pa.string(), nullable=False),     # why kept, dropped or undecided, in words
    pa.field("n_groups", pa.int32()),                    # groups large enough to count
    pa.field("test", pa.string()),                       # which test decided, in words
    pa.field("drop_held_out", pa.float64()),             # pair chosen on one fold of photos, measured on the other
    pa.field("drop_held_out_lo", pa.float64()),
    pa.field("drop_held_out_hi", pa.float64()),
    pa.field("needs", pa.string()),                      # undecided: which photos would decide it, in words
    pa.field("needs_background", pa.string()),
    pa.field("needs_n", pa.int32()),                     # photos to collect
    pa.field("strict_decision", pa.string()),            # paper rule: what the default strict rule decides
    pa.field("flags_policy", pa.string()),               # how clean's review flags were counted (thresholds.flagged)
])

# RUN/clean/NNNNN.parquet — per shard, what the clean stage saw in each stored image (before dedupe).
IMAGE_CHECKS = _schema("image_checks", 2, [
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
    # v2: 8x8 RGB thumbnails of the image and of central crops 1-12% off each side (13 x 192 bytes),
    # which confirm a pHash near-duplicate match (curation/dedupe.py)
    pa.field("thumbnails", pa.binary()),
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
# role: coverage (the first, stratified round) | active (a later round, where labels change the pair
# most) | calibration (known answers); v1 ledgers: common | counter | flagged | calibration.
# stratum: the model-assigned background, "unsure" (least sure assignments) or "flagged".
# status: pushed (task_id set) | no_image (not in any shard) | pending (not pushed yet).
ANNOTATION_TASKS = _schema("annotation_tasks", 2, [
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
    pa.field("stratum", pa.string()),                     # v2
    pa.field("batch", pa.int32()),                        # v2: push round that chose the photo (0 = coverage)
    pa.field("prefilled", pa.bool_()),                    # v2: the task carries the model's background
])

# RUN/annotation/annotations.parquet — raw annotations as exported, mapped back to sample uids.
# on_server is false for annotations kept from an earlier pull whose task was deleted by hand.
ANNOTATIONS = _schema("annotations", 2, [
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
    pa.field("prediction_shown", pa.bool_()),             # v2: the task showed the model's background
])

# RUN/annotation/verdicts.parquet — per photo, the aggregated human votes.
# status: verified (enough votes, background and class resolved) | tie | pending (too few votes).
VERDICTS = _schema("verdicts", 2, [
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
    pa.field("stratum", pa.string()),                     # v2
    pa.field("prediction_shown", pa.bool_()),             # v2: any vote was cast with the model's background shown
])

# RUN/annotation/estimates.parquet — per class × human background: the weighted (stratified ratio)
# estimate of the model's accuracy on the photos people put there (annotation/estimate.py).
HUMAN_ESTIMATES = _schema("human_estimates", 1, [
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("background", pa.string(), nullable=False),
    pa.field("n_labeled", pa.int32(), nullable=False),    # labelled photos people put on this background
    pa.field("n_hat", pa.float64(), nullable=False),      # estimated photos of the class on it, whole pool
    pa.field("model_n", pa.int32(), nullable=False),      # photos the model assigned to it
    pa.field("acc", pa.float64(), nullable=False),
    pa.field("acc_lo", pa.float64(), nullable=False),
    pa.field("acc_hi", pa.float64(), nullable=False),
    pa.field("n_eff", pa.float64(), nullable=False),      # effective count (annotation/estimate.py)
])

# RUN/annotation/verification.parquet — per class: labels spent, the verified (human) pair beside the
# model's, the loop's state, and what changed. simulated: the labels came from simulated annotators.
VERIFICATION = _schema("verification", 1, [
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("photos", pa.int32(), nullable=False),       # clean photos of the class (the pool)
    pa.field("labeled", pa.int32(), nullable=False),      # photos with a resolved human label
    pa.field("tasks", pa.int32(), nullable=False),        # photos sent to Label Studio
    pa.field("model_common", pa.string()),
    pa.field("model_counter", pa.string()),
    pa.field("model_decision", pa.string()),
    pa.field("human_common", pa.string()),
    pa.field("human_counter", pa.string()),
    pa.field("human_drop", pa.float64()),
    pa.field("human_drop_lo", pa.float64()),
    pa.field("human_drop_hi", pa.float64()),
    pa.field("human_decision", pa.string(), nullable=False),
    pa.field("human_reason", pa.string(), nullable=False),
    pa.field("state", pa.string(), nullable=False),       # open | settled: … | undecided within budget
    pa.field("state_why", pa.string(), nullable=False),
    pa.field("changed", pa.string(), nullable=False),     # what differs from the model's pair, in words
    pa.field("moved", pa.int32(), nullable=False),        # labelled photos people put on another background
    pa.field("simulated", pa.bool_(), nullable=False),
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

# RUN/release/NAME-VERSION/metadata.parquet — one row per released photo (curation/release.py).
# class_idx indexes classnames.txt (the label space); shard is the tar holding it, e.g. common/0.tar.
RELEASE_METADATA = _schema("release_metadata", 1, [
    pa.field("uid", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),          # the sample's key in its shard (no dots)
    pa.field("group", pa.string(), nullable=False),        # common | counter (= split)
    pa.field("shard", pa.string(), nullable=False),
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("background", pa.string(), nullable=False),
    pa.field("image_ext", pa.string(), nullable=False),    # jpg | webp | png: the stored bytes as fetched
    pa.field("sha256", pa.string(), nullable=False),       # of the image bytes
    pa.field("bytes", pa.int64(), nullable=False),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("url", pa.string()),
    pa.field("source", pa.string()),
    pa.field("source_id", pa.string()),
    pa.field("license", pa.string()),
    pa.field("attribution", pa.string()),
    pa.field("verified", pa.string(), nullable=False),     # human | model
    pa.field("model_id", pa.string()),                     # the model whose pair selection chose the photo's group
    pa.field("run_class_idx", pa.int32()),                 # the class's index in the run (config classes)
    pa.field("flags", pa.list_(pa.string())),              # clean's review flags
])

SCHEMAS: dict[str, pa.Schema] = {
    "release_metadata": RELEASE_METADATA,
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
    "human_estimates": HUMAN_ESTIMATES,
    "verification": VERIFICATION,
}

SAMPLE_STATUSES = ("ok", "failed", "rejected")


def version_of(schema: pa.Schema) -> int:
    return int(schema.metadata[VERSION_KEY])
