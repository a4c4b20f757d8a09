"""Run config: the paper preset, and errors that name the key a user got wrong."""
import subprocess
import sys

import pytest
import yaml

from curation import config, presets
from curation.errors import UserError


def _preset_dict():
    return yaml.safe_load(config.dump(presets.counteranimal()))


def test_preset_is_the_papers_protocol():
    cfg = presets.counteranimal()
    assert len(cfg.classes) == 45
    assert len(cfg.backgrounds) == 14 and {"snow", "grass", "water", "sky"} <= set(cfg.backgrounds)
    assert cfg.prompts.classes == ["A photo of {}."]
    assert (cfg.models[0].name, cfg.models[0].pretrained) == ("ViT-B-32", "laion400m_e31")
    assert cfg.label_space == "imagenet1k"
    polar = cfg.class_lookup()["ice bear"]          # the paper's name is a synonym
    assert (polar.name, polar.imagenet_idx) == ("polar bear", 296)


def test_dump_and_parse_round_trip():
    cfg = presets.counteranimal()
    assert config.parse(yaml.safe_load(config.dump(cfg))) == cfg


def test_typo_names_the_key_and_suggests():
    data = _preset_dict()
    data["fetch"] = {"timeot": 3}
    with pytest.raises(UserError, match=r"unknown key 'fetch.timeot' \(did you mean 'timeout'\?\)"):
        config.parse(data, "run/config.yaml")


def test_bad_values_name_each_key():
    data = _preset_dict()
    data["classes"][2]["imagenet_idx"] = 1000
    data["prompts"] = {"classes": ["a photo"]}
    with pytest.raises(UserError) as exc:
        config.parse(data, "x.yaml")
    msg = str(exc.value)
    assert msg.startswith("x.yaml:")
    assert "classes.2.imagenet_idx" in msg and "prompts.classes" in msg and "slot" in msg


def test_class_label_used_twice_is_an_error():
    data = _preset_dict()
    data["classes"][1]["synonyms"] = ["ostrich"]
    with pytest.raises(UserError, match="used by both"):
        config.parse(data)


def test_extra_attributes_are_checked():
    data = _preset_dict()
    data["prompts"] = {"attributes": ["at night", data["backgrounds"][0]]}
    with pytest.raises(UserError, match="repeats backgrounds"):
        config.parse(data)
    data["prompts"] = {"attributes": ["at night"], "attribute_template": "a photo at {attribute}."}
    with pytest.raises(UserError, match="prompts.attribute_template"):
        config.parse(data)


def test_load_reports_yaml_line_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="no config file here"):
        config.load(tmp_path)
    (tmp_path / "config.yaml").write_text("classes: [\n  - a\n bad")
    with pytest.raises(UserError, match=r"config.yaml: not valid YAML, line \d+"):
        config.load(tmp_path)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True)


def test_init_writes_preset_and_refuses_to_overwrite(tmp_path):
    run = tmp_path / "run"
    first = _cli("init", str(run))
    assert first.returncode == 0, first.stderr
    assert config.load(run) == presets.counteranimal()
    again = _cli("init", str(run))
    assert again.returncode == 2
    assert "already exists" in again.stderr and "Traceback" not in again.stderr
    assert not list(run.glob(".*.tmp"))


def _small(label_space: str, classes: list) -> dict:
    return {"classes": classes, "backgrounds": ["sea", "sand"], "label_space": label_space,
            "models": [{"name": "ViT-B-32", "pretrained": "x.pt"}]}


def test_two_classes_on_one_index_is_an_error_naming_both():
    # Under label_space: classes a class without imagenet_idx takes its position: hammerhead is 3.
    sharks = [{"name": "tiger shark", "imagenet_idx": 3}, {"name": "goldfish"}, {"name": "great white shark"},
              {"name": "hammerhead"}]
    with pytest.raises(UserError, match=r"share a class index.*3 \('tiger shark', 'hammerhead'\)"):
        config.parse(_small("classes", sharks), "run/config.yaml")
    twins = [{"name": "tiger shark", "imagenet_idx": 3}, {"name": "shark", "imagenet_idx": 3}]
    with pytest.raises(UserError, match=r"share an ImageNet index: 3 \('tiger shark', 'shark'\)"):
        config.parse(_small("imagenet1k", twins), "run/config.yaml")
    ok = [{"name": "tiger shark", "imagenet_idx": 3}, {"name": "goldfish", "imagenet_idx": 1}]
    assert config.parse(_small("imagenet1k", ok), "run/config.yaml").classes[0].imagenet_idx == 3
