from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
import yaml

from mtmedformer.config import config_from_dict, load_config, to_dict
from mtmedformer.config.loader import parse_overrides
from mtmedformer.errors import ConfigError


def test_defaults_are_valid_and_round_trip_through_dict():
    # Prepare / Execute
    cfg = config_from_dict({})
    # Assert
    assert config_from_dict(to_dict(cfg)) == cfg


def test_config_is_frozen():
    cfg = config_from_dict({})
    with pytest.raises(FrozenInstanceError):
        cfg.data = None  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"dat": {}}, "dat: unknown key in the top level. Did you mean 'data'?"),
        ({"data": {"imagesize": 64}}, "data.imagesize: unknown key in 'data'. Did you mean 'image_size'?"),
        ({"data": {"image_size": "big"}}, "data.image_size: expected an integer, got 'big'"),
        ({"data": {"image_size": True}}, "data.image_size: expected an integer, got True"),
        ({"data": {"augment": 1}}, "data.augment: expected true or false, got 1"),
        ({"data": {"source": "manifets", "path": "x.csv"}}, "Did you mean 'manifest'?"),
        ({"data": {"source": "manifest"}}, "data.path: is required when source is 'manifest'"),
        ({"data": {"classes": ["a"]}}, "data.classes: needs at least two class names"),
        ({"data": {"window_percentiles": [99, 1]}}, "data.window_percentiles: needs 0 <= low < high <= 100"),
        ({"data": {"window_percentiles": [1]}}, "data.window_percentiles: expected a list of 2 values, got 1"),
        ({"data": {"synthetic": {"num_sites": 0}}}, "data.synthetic.num_sites: must be > 0, got 0"),
        ({"data": 3}, "data: expected a mapping of DataConfig settings, got 3"),
    ],
)
def test_bad_values_name_the_key_path(data, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert expected in str(info.value)


def test_overrides_are_parsed_as_yaml_and_merged():
    # Prepare
    base = {"data": {"image_size": 64, "classes": ["normal", "pneumonia"]}}
    # Execute
    cfg = config_from_dict(base, ["data.image_size=96", "data.synthetic.modality=chest_xray"])
    # Assert
    assert cfg.data.image_size == 96
    assert cfg.data.classes == ("normal", "pneumonia")
    assert cfg.data.synthetic.modality == "chest_xray"


@pytest.mark.parametrize("item", ["noequals", "=3"])
def test_malformed_override_is_rejected(item):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides([item])


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(scalar)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("model:\n  stem: conv\n", "model.stem: unknown key in 'model'."),
        ("model:\n  stem: patch\n", "model.stem: unknown key in 'model'."),
        ("train:\n  classifier_lr_scale: 10.0\n", "train.classifier_lr_scale: unknown key in 'train'."),
        ("model:\n  cls_pool: lesion\n", "model.cls_pool: 'lesion' is not one of ['cls', 'mean']"),
        ("model:\n  cls_pool: decoder\n", "model.cls_pool: 'decoder' is not one of ['cls', 'mean']"),
    ],
)
def test_a_config_file_setting_a_removed_option_gets_the_loaders_error(tmp_path, yaml_text, expected):
    # Prepare
    path = tmp_path / "old.yaml"
    path.write_text(yaml_text)
    # Execute / Assert
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(expected)


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_set_only_existing_keys_and_every_value_they_set_is_applied(path):
    # Prepare
    written = dict(_leaves(yaml.safe_load(path.read_text())))
    # Execute
    resolved = dict(_leaves(to_dict(load_config(path))))
    # Assert (lists come back as lists, tuples of the config included)
    assert written and {key: resolved[key] for key in written} == written


def test_operating_point_defaults_and_settings_are_read():
    # Execute
    default = config_from_dict({}).train.operating_point
    chosen = config_from_dict({}, ["train.operating_point.rule=target_sensitivity",
                                   "train.operating_point.target_sensitivity=0.8"]).train.operating_point
    # Assert
    assert (default.rule, default.target_sensitivity, default.threshold) == ("youden", 0.9, 0.5)
    assert (chosen.rule, chosen.target_sensitivity) == ("target_sensitivity", 0.8)


@pytest.mark.parametrize(
    ("operating_point", "expected"),
    [
        ({"rule": "youdn"}, "train.operating_point.rule: 'youdn' is not one of ['youden', 'target_sensitivity', "
                            "'fixed']. Did you mean 'youden'?"),
        ({"threshold": 1.0}, "train.operating_point.threshold: must be in (0, 1), got 1.0"),
        ({"threshold": 0}, "train.operating_point.threshold: must be in (0, 1), got 0.0"),
        ({"rule": "target_sensitivity", "target_sensitivity": 1.5},
         "train.operating_point.target_sensitivity: must be in (0, 1), got 1.5"),
        ({"target_sensitivity": 0.8}, "train.operating_point.target_sensitivity: is only used with rule "
                                      "'target_sensitivity', the rule is 'youden'; remove target_sensitivity"),
        ({"treshold": 0.3}, "train.operating_point.treshold: unknown key in 'train.operating_point'. "
                            "Did you mean 'threshold'?"),
        ({"threshold": "low"}, "train.operating_point.threshold: expected a number, got 'low'"),
    ],
)
def test_bad_operating_point_settings_name_the_key_path(operating_point, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"train": {"operating_point": operating_point}})
    assert expected in str(info.value)
