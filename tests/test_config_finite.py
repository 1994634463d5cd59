"""Every float setting of the experiment config rejects NaN and infinity, naming its key path."""

import dataclasses
import math
import re
import typing

import pytest

from mtmedformer.config import ExperimentConfig, config_from_dict
from mtmedformer.engine.mim import MimConfig
from mtmedformer.errors import ConfigError

INF_ALLOWED = {"federated.matching.prior_variance"}  # +inf means "no prior" (MatchingConfig docstring)


def _float_paths(cls, prefix=""):
    """(dotted key path, is-a-tuple) of every float-typed field reachable from the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, path = hints[f.name], f"{prefix}{f.name}"
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if dataclasses.is_dataclass(tp):
            yield from _float_paths(tp, f"{path}.")
        elif tp is float or (args and args[0] is float and typing.get_origin(tp) is not tuple):
            yield path, False
        elif typing.get_origin(tp) is tuple or any(typing.get_origin(a) is tuple for a in args):
            inner = typing.get_args(tp if typing.get_origin(tp) is tuple else args[0])
            if float in inner:
                yield path, True


FLOAT_PATHS = sorted(_float_paths(ExperimentConfig))


def _nested(path, value):
    out = node = {}
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _valid_tuple(path):
    default = ExperimentConfig()
    for part in path.split("."):
        default = getattr(default, part)
    return list(default) if default is not None else [1.0, 1.0]


def test_the_walk_finds_the_settings_the_issue_names():
    paths = {p for p, _ in FLOAT_PATHS}
    assert {"train.lr", "train.grad_clip", "train.weight_decay", "train.max_minutes",
            "federated.round_timeout_s", "data.window_percentiles"} <= paths
    assert len(paths) > 30


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("path", "is_tuple"), FLOAT_PATHS, ids=[p for p, _ in FLOAT_PATHS])
def test_every_float_setting_rejects_non_finite_values_with_its_key_path(path, is_tuple, bad):
    # Prepare
    if path in INF_ALLOWED and bad == math.inf:
        pytest.skip("+inf is this setting's documented 'no prior' value (tested below)")
    value = bad
    if is_tuple:
        value = _valid_tuple(path)
        value[-1] = bad
    # Execute / Assert
    with pytest.raises(ConfigError, match="^" + re.escape(path) + ": .*finite"):
        config_from_dict(_nested(path, value))


def test_prior_variance_accepts_inf_as_no_prior_but_not_nan():
    assert config_from_dict(_nested("federated.matching.prior_variance", math.inf)).federated.matching.prior_variance \
        == math.inf
    with pytest.raises(ConfigError, match=r"federated\.matching\.prior_variance: must be a finite number, got nan"):
        config_from_dict(_nested("federated.matching.prior_variance", math.nan))


def test_yaml_spelt_nan_from_the_command_line_is_rejected():
    with pytest.raises(ConfigError, match=r"^train\.lr: must be a finite number, got nan"):
        config_from_dict({}, ["train.lr=.nan"])
    with pytest.raises(ConfigError, match=r"^federated\.round_timeout_s: must be a finite number, got inf"):
        config_from_dict({}, ["federated.round_timeout_s=.inf"])


@pytest.mark.parametrize("name", ["minutes", "mask_ratio", "lr", "weight_decay"])
def test_pretraining_settings_reject_nan(name):
    with pytest.raises(ConfigError, match=f"{name} must be a finite number"):
        MimConfig(**{name: math.nan})
