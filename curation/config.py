"""A run's config.yaml: load, validate with errors that name the key, and write back.

Every stage reads its settings from here; unknown keys are errors (a typo must not be
silently ignored), with a suggestion of the key that was probably meant.
"""
from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from curation.errors import UserError

CONFIG_VERSION = 1
DEFAULT_LICENSES = ["cc0", "cc-by", "cc-by-sa", "cc-by-nc", "cc-by-nc-sa", "cc-by-nd", "cc-by-nc-nd",
                    "pd", "gpl-2.0-or-later"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ClassSpec(_Strict):
    name: str = Field(min_length=1)
    imagenet_idx: int | None = Field(default=None, ge=0, le=999)
    synonyms: list[str] = []
    inat_taxa: list[str] = []     # iNaturalist scientific names or numeric taxon ids

    def labels(self) -> list[str]:
        return [self.name, *self.synonyms]


class ModelSpec(_Strict):
    name: str                      # open_clip model config name, e.g. ViT-B-32
    pretrained: str | None = None  # open_clip tag (laion400m_e31) or a checkpoint file
    id: str | None = None          # how scores name this model; defaults to name/pretrained

    @property
    def model_id(self) -> str:
        if self.id:
            return self.id
        if self.name.startswith(("hf-hub:", "local-dir:")) and not self.pretrained:
            return self.name        # the weights come with the name
        return f"{self.name}/{Path(self.pretrained).name if self.pretrained else 'random'}"


class PromptSpec(_Strict):
    classes: list[str] = ["A photo of {}."]
    backgrounds: list[str] = ["a photo of {}."]
    ensemble: Literal["none", "openai"] = "none"   # openai: open_clip's 80 ImageNet templates
    # Background prompts that name the class too; used by background assignment when not empty.
    class_backgrounds: list[str] = ["a photo of a {class} on {background}."]
    # Extra attributes for Seed 2's δ beside the backgrounds (e.g. "at night", "in the rain"). A photo
    # has one when attribute_template (naming class and attribute) beats attribute_baseline for it.
    attributes: list[str] = []
    attribute_template: str = "a photo of a {class} {attribute}."
    attribute_baseline: str = "a photo of a {class}."

    @field_validator("attribute_template")
    @classmethod
    def _attribute_slots(cls, t: str) -> str:
        if "{class}" not in t or "{attribute}" not in t:
            raise ValueError(f"template {t!r} needs both '{{class}}' and '{{attribute}}' slots")
        return t

    @field_validator("attribute_baseline")
    @classmethod
    def _baseline_slot(cls, t: str) -> str:
        if "{class}" not in t:
            raise ValueError(f"template {t!r} needs a '{{class}}' slot")
        return t

    @field_validator("attributes")
    @classmethod
    def _distinct_attributes(cls, names: list[str]) -> list[str]:
        dup = sorted({a for a in names if names.count(a) > 1})
        if dup:
            raise ValueError(f"attributes listed twice: {', '.join(dup)}")
        if any(not a.strip() for a in names):
            raise ValueError("an attribute is empty")
        return names

    @field_validator("class_backgrounds")
    @classmethod
    def _has_both_slots(cls, templates: list[str]) -> list[str]:
        for t in templates:
            if "{class}" not in t or "{background}" not in t:
                raise ValueError(f"template {t!r} needs both '{{class}}' and '{{background}}' slots")
        return templates

    @field_validator("classes", "backgrounds")
    @classmethod
    def _has_slot(cls, templates: list[str]) -> list[str]:
        if not templates:
            raise ValueError("needs at least one template")
        for t in templates:
            if "{}" not in t:
                raise ValueError(f"template {t!r} has no '{{}}' slot for the name")
        return templates


class ColumnMap(_Strict):
    url: str = "url"
    class_: str = Field(default="class", alias="class")
    id: str | None = None
    license: str | None = "license"
    attribution: str | None = "attribution"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SourceSpec(_Strict):
    kind: Literal["url_list", "inaturalist", "folder"] = "url_list"
    path: str | None = None        # file (url_list), export folder (inaturalist), tree root (folder)
    format: Literal["csv", "tsv", "parquet", "jsonl"] | None = None   # url_list; default from suffix
    columns: ColumnMap = ColumnMap()
    photo_size: Literal["original", "large", "medium", "small", "thumb", "square"] = "medium"
    photo_url_template: str = "https://inaturalist-open-data.s3.amazonaws.com/photos/{photo_id}/{size}.{extension}"
    quality_grades: list[Literal["research", "needs_id", "casual"]] = ["research"]   # inaturalist
    first_photo_only: bool = False   # inaturalist: only each observation's first photo (position 0)
    license: str | None = None       # license of rows whose source gives none (a folder's files)
    attribution: str | None = None   # attribution of rows whose source gives none

    @field_validator("photo_url_template")
    @classmethod
    def _template(cls, template: str) -> str:
        try:
            url = template.format(photo_id=1, size="medium", extension="jpg")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template may use only {{photo_id}}, {{size}}, {{extension}} ({exc})") from None
        if url == template.format(photo_id=2, size="medium", extension="jpg"):
            raise ValueError("template needs a {photo_id} slot")
        return template


class FetchSpec(_Strict):
    image_size: int = Field(default=512, ge=16)     # longest side after resize
    resize_only_if_bigger: bool = True
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    encode_quality: int = Field(default=95, ge=1, le=100)
    chunk_size: int = Field(default=1000, ge=1)       # candidates per chunk = per shard
    thread_count: int = Field(default=32, ge=1)
    timeout: float = Field(default=10.0, gt=0)
    retries: int = Field(default=0, ge=0)
    max_pixels: int = Field(default=89_478_485, ge=1)  # decompression-bomb cap (PIL's default)
    max_bytes: int = Field(default=50_000_000, ge=1)
    allowed_networks: list[str] = []   # CIDRs exempt from the private-address guard (tests: 127.0.0.0/8)
    user_agent_token: str | None = "counteranimal"

    @field_validator("allowed_networks")
    @classmethod
    def _cidrs(cls, nets: list[str]) -> list[str]:
        for n in nets:
            try:
                ipaddress.ip_network(n, strict=False)
            except ValueError:
                raise ValueError(f"{n!r} is not an IP network (e.g. 127.0.0.0/8)") from None
        return nets


class Thresholds(_Strict):
    # Pair selection (curation/propose.py). rule "paper": among groups of at least min_group_size
    # photos, keep a class when its accuracy varies by more than min_accuracy_range points; common =
    # best, counter = worst. rule "strict" (default) adds: a common group that holds at least
    # min_common_share of the class, a drop significant at alpha once the choice of the pair is
    # accounted for (a permutation test) and after correction across classes, and (with several
    # models) the same pair kept by all of them.
    rule: Literal["strict", "paper"] = "strict"
    min_accuracy_range: float = Field(default=5.0, ge=0)
    # Unset: the rule's own default (group_size()). Set it only to override the rule's.
    min_group_size: int | None = Field(default=None, ge=1)
    min_common_share: float = Field(default=0.1, ge=0, le=1)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    correction: Literal["holm", "bh", "none"] = "holm"
    power: float = Field(default=0.8, gt=0, lt=1)   # for "how many more photos would decide it"
    require_all_models: bool = True
    # Photos clean flagged for review (label_noise, unclear, ambiguous) in the model-only counts:
    # include them, exclude them, or "both": a pair is kept only when it holds either way.
    flagged: Literal["include", "exclude", "both"] = "include"
    # Photos whose model-assigned background has a confidence below this are left out of the group
    # counts (they keep their group in RUN/groups/): an unsure assignment is most often a photo of
    # the class's frequent background, and it lifts the accuracy of the group it lands in.
    min_background_confidence: float = Field(default=0.0, ge=0, le=1)

    # strict: 15 photos, or 5% of the class's photos where that is fewer, but never under 8 (a class
    # of 300 photos or more: 15; of 160: 8). The rule's permutation test already accounts for a
    # group's size (0 of 16 against 190 of 210 is kept: tests/test_propose.py), so the floor only keeps
    # a group worth measuring: at 15 a group's 95% interval spans 25-70% at 7 of 15 and 0-20% at 0 of
    # 15; at 8, 0-32% at 0 of 8. 15 was chosen on the tuning worlds of 300 photos per class
    # (bench/group_floor.py --tuning; 12, 15, 17 and 20 tried): 15 kept the most oracle pairs
    # (verified 93/96, against 87/96 at 20; every photo labelled 94 against 88; the model's own 87
    # either way). At 20, the rarer backgrounds of a class whose common holds 70% of its photos (13-19
    # photos each) could never form a group, whoever labelled them; the same holds at 15 for a class of
    # 150 photos with 60% on its common (~10 on each other background), hence the share
    # (bench/RESULTS.md, "the strict rule's floor on small classes").
    # paper: 100 photos, below which a group's standard error at 50% accuracy (√(.25/n)) exceeds
    # the 5 points the rule compares, so best and worst would be picked by noise; the paper's groups
    # hold 130–160 photos on average (7,174 common + 5,926 counter photos over 45 classes).
    RULE_GROUP_SIZE: ClassVar[dict[str, int]] = {"strict": 15, "paper": 100}
    STRICT_GROUP_SHARE: ClassVar[float] = 0.05
    STRICT_SMALLEST_GROUP: ClassVar[int] = 8

    def group_size(self) -> int:
        """The floor for a class of any size (the largest it can be)."""
        return self.min_group_size if self.min_group_size is not None else self.RULE_GROUP_SIZE[self.rule]

    def group_share(self) -> float:
        """The floor's share of the class's photos, 0 when the floor is a fixed number."""
        return self.STRICT_GROUP_SHARE if self.min_group_size is None and self.rule == "strict" else 0.0

    def describe_group_size(self) -> str:
        if self.group_share():
            return (f"{self.group_size()} photos, or {100 * self.group_share():g}% of the class's "
                    f"if fewer (at least {self.STRICT_SMALLEST_GROUP})")
        return f"{self.group_size()} photos"


class CleanSpec(_Strict):
    """Automatic rejections (size, shape, duplicates) and model-signal flags for human review."""
    min_side: int = Field(default=64, ge=1)                 # shorter side in pixels, as stored
    max_aspect_ratio: float = Field(default=4.0, ge=1.0)    # longer side / shorter side
    # Near duplicates (curation/dedupe.py): a pair within near_duplicate_bits pHash bits is a candidate; it is
    # a near duplicate only when its 8x8 colour thumbnails also agree: at the best crop alignment, after a colour
    # fit within a copy's jitter, no more than one of the 64 cells differs by more than
    # near_duplicate_max_cell_difference (in units of the image's spread; bench/dedupe.py measures it).
    near_duplicate_bits: int = Field(default=4, ge=0, le=16)
    near_duplicate_max_cell_difference: float = Field(default=0.25, ge=0)
    # Review flags (curation/clean.py review_flags), never drops; bench/flags.py measures them on planted worlds.
    # label_noise: neither the model nor the photo's neighbours support its class — its class ranks below
    # label_noise_top_k in zero-shot AND at most label_noise_max_neighbor_share of its label_noise_neighbors
    # nearest photos in the run (cosine on the flag model's image embeddings) carry it. 0 neighbours: rank alone.
    label_noise_top_k: int = Field(default=1, ge=1)
    label_noise_neighbors: int = Field(default=5, ge=0)
    label_noise_max_neighbor_share: float = Field(default=0.0, ge=0, le=1)
    # ambiguous: a second class is this likely (top-2 probability), i.e. two classes both plausible.
    ambiguity_min_second: float = Field(default=0.4, gt=0, le=1)
    # unclear (the animal is not prominent): its class prompt's probability against the background prompts
    # (p_subject) is below clarity_min_subject AND the best class prompt's (p_animal) is below
    # clarity_min_animal: no animal prompt, its own or another, beats the background.
    clarity_min_subject: float = Field(default=0.1, ge=0, le=1)
    clarity_min_animal: float = Field(default=0.5, ge=0, le=1)
    flag_model: str | None = None                            # model id whose scores set the flags; default the first


class ScoreSpec(_Strict):
    """How the score stage runs its models."""
    batch_size: int = Field(default=32, ge=1)
    device: str = "cpu"                                      # cpu | cuda | cuda:N | mps
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"      # fp16/bf16: run the model in half precision
    num_threads: int | None = Field(default=None, ge=1)      # torch intra-op threads per worker; default torch's
    # threads decoding + preprocessing, batches ahead; default all cores but one, at least 2 (a GPU
    # running ViT-B-32 at thousands of images a second needs many cores decoding JPEGs for it)
    decode_threads: int | None = Field(default=None, ge=1)
    # How JPEGs are decoded before the model's own preprocess (resize, crop, normalise):
    #   exact  full-size decode: scores equal a direct open_clip call (to float rounding);
    #   draft  libjpeg decodes JPEGs at 1/2, 1/4 or 1/8 scale, keeping each side >= 2x the
    #          preprocess's resize target, so its bicubic resize still downsamples 2x or more. Pixels
    #          differ slightly, so scores do too: on the planted world's scenes at 512 px, the same
    #          top-1 for >= 98% of images (tests/test_score.py). Worth it when decoding costs more than
    #          the forward (a small model on 512 px photos, see bench/RESULTS.md "## score"); for
    #          ViT-B-32 at 224 px it changes nothing on 512 px photos (no 1/2 scale stays >= 448).
    decode: Literal["exact", "draft"] = "exact"
    one_vs_k: int = Field(default=20, ge=2)                  # the paper's "1 vs 20"


class BackgroundSpec(_Strict):
    """How each photo gets its background (see curation/backgrounds.py)."""
    method: Literal["zero-shot", "cluster", "hybrid"] = "zero-shot"
    # zero-shot prompts: "class" (prompts.class_backgrounds, naming the photo's class), "generic"
    # (prompts.backgrounds, as scored), or "both" averaged.
    prompts: Literal["class", "generic", "both"] = "class"
    model: str | None = None            # model id whose scores decide; default the first model
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    min_cluster_size: int = Field(default=10, ge=1)
    max_clusters: int | None = Field(default=None, ge=1)
    min_cluster_fit: float = Field(default=0.35, ge=0, le=1)
    seed: int = 0


class AnnotationSpec(_Strict):
    """Human verification in Label Studio (`counteranimal annotate`)."""
    url: str | None = None            # server URL; default LABEL_STUDIO_URL, else `counteranimal label-studio start`'s
    project_title: str | None = None  # default "counteranimal: <name>"
    overlap: int = Field(default=3, ge=1)                   # annotators per task
    min_votes: int | None = Field(default=None, ge=1)       # votes for a verdict; default = overlap
    calibration_share: float = Field(default=0.05, ge=0, le=1)  # extra known-answer tasks, share of the rest
    include_dropped: bool = False     # also verify classes whose proposal was dropped
    batch_size: int = Field(default=500, ge=1)              # tasks per import request
    retries: int = Field(default=6, ge=0)                   # server down: attempts before a clear error
    backoff: float = Field(default=1.0, gt=0)               # first wait in seconds, doubled each retry
    files_root: str | None = None     # the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (own servers)
    seed: int = 0                     # calibration draw and the labelling order within each stratum
    # The active loop (annotation/loop.py). The class question is never pre-filled; the model's
    # background only when prefill_background is set (annotators lean towards what they are shown).
    prefill_background: bool = False
    budget: int | None = Field(default=None, ge=1)          # photos sent in all, every round; None: no cap
    initial_per_stratum: int = Field(default=5, ge=1)       # round 0: photos per (class, model background)
    round_size: int = Field(default=100, ge=1)              # photos per later round, shared by open classes
    unsure_share: float = Field(default=0.1, ge=0, le=1)    # least sure assignments: a stratum of their own
    min_group_labels: int = Field(default=5, ge=1)          # labelled photos before a group may form a pair


class RunConfig(_Strict):
    version: int = CONFIG_VERSION
    name: str = "counteranimal"
    classes: list[ClassSpec] = Field(min_length=1)
    backgrounds: list[str] = Field(min_length=1)
    prompts: PromptSpec = PromptSpec()
    label_space: Literal["imagenet1k", "classes"] = "imagenet1k"
    models: list[ModelSpec] = Field(min_length=1)
    thresholds: Thresholds = Thresholds()
    source: SourceSpec = SourceSpec()
    license_allow: list[str] = DEFAULT_LICENSES
    fetch: FetchSpec = FetchSpec()
    background_assignment: BackgroundSpec = BackgroundSpec()
    clean: CleanSpec = CleanSpec()
    score: ScoreSpec = ScoreSpec()
    annotation: AnnotationSpec = AnnotationSpec()

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v > CONFIG_VERSION:
            raise ValueError(f"config version {v} is newer than this counteranimal reads ({CONFIG_VERSION})")
        return v

    @model_validator(mode="after")
    def _unique(self) -> "RunConfig":
        seen: dict[str, str] = {}
        for c in self.classes:
            for label in c.labels():
                key = label.casefold()
                if key in seen and seen[key] != c.name:
                    raise ValueError(f"class label {label!r} is used by both {seen[key]!r} and {c.name!r}")
                seen[key] = c.name
        self._check_indices()
        dup = {b for b in self.backgrounds if self.backgrounds.count(b) > 1}
        if dup:
            raise ValueError(f"backgrounds listed twice: {', '.join(sorted(dup))}")
        both = sorted(set(self.prompts.attributes) & set(self.backgrounds))
        if both:
            raise ValueError(f"prompts.attributes repeats backgrounds ({', '.join(both)}): "
                             "backgrounds are attributes already")
        return self

    def _check_indices(self) -> None:
        """Two classes must never share an index: scores, groups and proposals are keyed by it."""
        by_idx: dict[int, list[str]] = defaultdict(list)
        for i, c in enumerate(self.classes):
            if c.imagenet_idx is None and self.label_space == "imagenet1k":
                continue    # the score stage names classes without an ImageNet index
            # (An index outside ImageNet-1K's 0–999 is refused by the field itself, naming the class's key.)
            by_idx[c.imagenet_idx if c.imagenet_idx is not None else i].append(c.name)
        clashes = [f"{idx} ({', '.join(repr(n) for n in names)})" for idx, names in sorted(by_idx.items())
                   if len(names) > 1]
        if clashes:
            what = "n ImageNet index" if self.label_space == "imagenet1k" else " class index (imagenet_idx or position)"
            raise ValueError(f"classes share a{what}: {'; '.join(clashes)}; every class needs its own")

    # -- lookups used by every stage ---------------------------------------------------
    def class_lookup(self) -> dict[str, ClassSpec]:
        """Case-insensitive map from every class label (name, synonyms) to its class."""
        return {label.casefold(): c for c in self.classes for label in c.labels()}

    def class_index(self, c: ClassSpec) -> int:
        """The class's ImageNet-1K index, or its position in the list for custom classes."""
        return c.imagenet_idx if c.imagenet_idx is not None else self.classes.index(c)

    def digest(self) -> str:
        """Stable hash of the settings, for the manifest."""
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def parse(data: Any, source: str = "config.yaml") -> RunConfig:
    if not isinstance(data, dict):
        raise UserError("the config must be a mapping of keys (classes, backgrounds, models, …)", where=source)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(_explain(exc, data), where=source) from None


def load(path: str | Path) -> RunConfig:
    from curation import storage

    path = storage.path(path)
    if path.is_dir():
        path = path / "config.yaml"
    if not path.exists():
        raise UserError("no config file here", where=str(path),
                        hint="Create one with `counteranimal init RUN --preset counteranimal`.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        raise UserError(f"not valid YAML{line}: {getattr(exc, 'problem', exc)}", where=str(path)) from None
    return parse(data, str(path))


def dump(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json", by_alias=True, exclude_none=True),
                          sort_keys=False, allow_unicode=True, width=100)


def _explain(exc: ValidationError, data: dict) -> str:
    lines = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = f"unknown key '{loc}'"
            known = _known_keys(err["loc"][:-1])
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            if close:
                msg += f" (did you mean '{close[0]}'?)"
            elif known:
                msg += f" (allowed: {', '.join(known)})"
        elif err["type"] == "missing":
            msg = f"missing required key '{loc}'"
        else:
            msg = f"key '{loc}': {err['msg']}"
            if "input" in err and not isinstance(err["input"], (dict, list)):
                msg += f" (got {err['input']!r})"
        lines.append(msg)
    more = len(exc.errors()) - len(lines)
    if more > 0:
        lines.append(f"and {more} more")
    return "; ".join(lines) + "."


def _known_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] | None = RunConfig
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        ann = field.annotation
        inner = getattr(ann, "__args__", (ann,))
        model = next((a for a in (ann, *inner) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]
