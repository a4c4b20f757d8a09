"""Named presets for `counteranimal init`: the paper's protocol as data."""
from __future__ import annotations

import csv
from importlib import resources

from curation.config import ClassSpec, ModelSpec, PromptSpec, RunConfig, Thresholds
from curation.errors import UserError

# The paper's background vocabulary (CounterAnimal, section 3).
PAPER_BACKGROUNDS = ["ground", "water", "earth", "sand", "snow", "grass", "human", "sky", "road", "rock",
                     "shrub", "indoor", "tree", "outdoor"]


def paper_pairs() -> list[dict]:
    """The paper's 45 classes: imagenet_idx, paper_name, open_clip_name, common, counter."""
    with resources.files("curation.data").joinpath("counteranimal_pairs.csv").open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["imagenet_idx"] = int(r["imagenet_idx"])
    return rows


def paper_results() -> list[dict]:
    """Published class-balanced accuracies per model (common, counter, drop)."""
    with resources.files("curation.data").joinpath("counteranimal_results.csv").open() as f:
        return list(csv.DictReader(f))


def paper_inat_taxa() -> dict[int, list[str]]:
    """iNaturalist taxa (scientific names) per ImageNet index for the paper's classes.

    Class 30 (American bullfrog) is left out on purpose: its current iNaturalist name
    (Lithobates / Aquarana) is not certain here; add it to the config by name or taxon id.
    """
    with resources.files("curation.data").joinpath("counteranimal_inat_taxa.csv").open() as f:
        return {int(r["imagenet_idx"]): [t.strip() for t in r["inat_taxa"].split(";") if t.strip()]
                for r in csv.DictReader(f)}


def counteranimal() -> RunConfig:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # open_clip ships the 1,000 names

    classes = []
    taxa = paper_inat_taxa()
    for row in paper_pairs():
        name = IMAGENET_CLASSNAMES[row["imagenet_idx"]]
        synonyms = [row["paper_name"]] if row["paper_name"].casefold() != name.casefold() else []
        classes.append(ClassSpec(name=name, imagenet_idx=row["imagenet_idx"], synonyms=synonyms,
                                 inat_taxa=taxa.get(row["imagenet_idx"], [])))
    return RunConfig(
        name="counteranimal",
        classes=classes,
        backgrounds=list(PAPER_BACKGROUNDS),
        prompts=PromptSpec(classes=["A photo of {}."], backgrounds=["A photo of {}."]),
        label_space="imagenet1k",
        models=[ModelSpec(name="ViT-B-32", pretrained="laion400m_e31", id="ViT-B-32/laion400m_e31")],
        thresholds=Thresholds(rule="paper", min_accuracy_range=5.0),   # min_group_size: the paper rule's 100
    )


PRESETS = {"counteranimal": counteranimal}


def build(name: str) -> RunConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise UserError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}") from None
