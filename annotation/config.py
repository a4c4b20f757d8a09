"""The Label Studio labeling config for a run, and the mapping between its results and our values.

One form per photo: the image; "is this a {class}?" (yes / no / unsure); the background, from
the run's vocabulary plus "other"; and flags (several animals, animal not prominent, bad photo).
Choice aliases are the stable values stored in results; the visible text can change freely.

Fast by keyboard: y / n / u answer the class question, 1-9, 0 and then a, s, d, f, g, … pick the
background (one key or one click each), x / c / v tick the flags, Ctrl+Enter submits. The class
question is never pre-filled (a task carries no prediction for it); only the background may be,
and only when the curator sets annotation.prefill_background.
"""
from __future__ import annotations

from xml.sax.saxutils import quoteattr

from curation.config import RunConfig

IMAGE, IS_CLASS, BACKGROUND, FLAGS = "image", "is_class", "background", "flags"
OTHER = "other"
IS_CLASS_CHOICES = {"yes": "Yes", "no": "No", "unsure": "Not sure"}
FLAG_CHOICES = {
    "several_animals": "Several animals or classes",
    "not_prominent": "Animal not prominent",
    "bad_photo": "Bad photo (blurred, cut, not a photo)",
}


def vocabulary(cfg: RunConfig) -> list[str]:
    """Background choices shown to annotators: the run's backgrounds, then "other"."""
    return [*cfg.backgrounds, *([] if OTHER in cfg.backgrounds else [OTHER])]


IS_CLASS_KEYS = {"yes": "y", "no": "n", "unsure": "u"}
FLAG_KEYS = {"several_animals": "x", "not_prominent": "c", "bad_photo": "v"}
BACKGROUND_KEYS = "1234567890asdfgjklqwertiopzbm"    # none of y n u x c v h (Label Studio's own)


def background_keys(cfg: RunConfig) -> dict[str, str]:
    return {b: k for b, k in zip(vocabulary(cfg), BACKGROUND_KEYS)}


def labeling_config(cfg: RunConfig) -> str:
    def choice(alias: str, text: str, key: str | None = None) -> str:
        hotkey = f" hotkey={quoteattr(key)}" if key else ""
        return f'    <Choice value={quoteattr(text)} alias={quoteattr(alias)}{hotkey}/>'

    keys = background_keys(cfg)

    lines = [
        "<View>",
        f'  <Image name="{IMAGE}" value="$image" zoom="true" maxWidth="720px"/>',
        '  <Header value="$question"/>',
        f'  <Choices name="{IS_CLASS}" toName="{IMAGE}" choice="single-radio" showInline="true" required="true">',
        *(choice(a, t, IS_CLASS_KEYS[a]) for a, t in IS_CLASS_CHOICES.items()),
        "  </Choices>",
        '  <Header value="Background (where the animal is)"/>',
        f'  <Choices name="{BACKGROUND}" toName="{IMAGE}" choice="single-radio" showInline="true" required="true">',
        *(choice(b, b, keys.get(b)) for b in vocabulary(cfg)),
        "  </Choices>",
        '  <Header value="Problems (tick any)"/>',
        f'  <Choices name="{FLAGS}" toName="{IMAGE}" choice="multiple" showInline="true">',
        *(choice(a, t, FLAG_KEYS[a]) for a, t in FLAG_CHOICES.items()),
        "  </Choices>",
        "</View>",
    ]
    return "\n".join(lines) + "\n"


def question(class_name: str) -> str:
    article = "an" if class_name[:1].lower() in "aeiou" else "a"
    return f"Is this {article} {class_name}?"


def _choices(name: str, values: list[str]) -> dict:
    return {"from_name": name, "to_name": IMAGE, "type": "choices", "value": {"choices": values}}


def prediction_result(background: str | None) -> list[dict]:
    """A prediction's result regions: the model's background only. The class question is never
    pre-filled: shown the model's "no" where it fails, annotators would say "no" where the drop is."""
    return [_choices(BACKGROUND, [background])] if background is not None else []


def annotation_result(background: str | None, is_class: str | None, flags: list[str] = ()) -> list[dict]:
    """What an annotator's submission looks like (tests, simulated annotators)."""
    result = []
    if is_class is not None:
        result.append(_choices(IS_CLASS, [is_class]))
    if background is not None:
        result.append(_choices(BACKGROUND, [background]))
    if flags:
        result.append(_choices(FLAGS, list(flags)))
    return result


def parse_result(result: list[dict]) -> dict:
    """An annotation's result regions → {background, is_class, flags}; absent answers are None/[]."""
    values: dict = {"background": None, "is_class": None, "flags": []}
    for region in result or []:
        choices = (region.get("value") or {}).get("choices") or []
        name = region.get("from_name")
        if name == BACKGROUND and choices:
            values["background"] = choices[0]
        elif name == IS_CLASS and choices:
            values["is_class"] = choices[0]
        elif name == FLAGS:
            values["flags"] = sorted(set(choices))
    return values
