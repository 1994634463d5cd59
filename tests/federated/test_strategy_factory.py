"""One table of strategies: the config's names are the server's builders, each built from its own settings."""

import importlib
from typing import get_args

import pytest

from mtmedformer.config import config_from_dict
from mtmedformer.config import federated as federated_config
from mtmedformer.config.federated import STRATEGY_SETTINGS, FederatedConfig, StrategyName
from mtmedformer.errors import ConfigError
from server import strategy_factory
from server.strategy_factory import BUILDERS, build_strategy
from strategies.server_strategy import CarriedArrays, DirectAggregation, ServerStrategy

TINY_MODEL = {"patch_size": 8, "depth": 1, "seg_feature_size": 4, "detection": {"feature_size": 4, "stride": 8}}


def _experiment(strategy: str, **federated):
    return config_from_dict(
        {"data": {"image_size": 32}, "model": TINY_MODEL, "federated": {"strategy": strategy, **federated}}
    )


def test_the_config_and_the_server_name_the_same_strategies():
    assert set(BUILDERS) == set(STRATEGY_SETTINGS) == set(get_args(StrategyName))


def test_every_listed_setting_is_a_setting_of_the_federated_section():
    for strategy in STRATEGY_SETTINGS:
        settings = FederatedConfig(strategy=strategy).strategy_settings()
        assert len(settings) == len(STRATEGY_SETTINGS[strategy]), strategy


@pytest.mark.parametrize("name", sorted(STRATEGY_SETTINGS))
def test_every_strategy_builds(name):
    strategy = build_strategy(_experiment(name))
    assert isinstance(strategy, ServerStrategy)
    assert strategy.state_dict() == {}  # nothing carried before the first round


@pytest.mark.parametrize(
    ("name", "federated", "attribute", "value"),
    [
        ("fedprox", {"strategy_options": {"proximal_mu": 0.3}}, "proximal_mu", 0.3),
        ("fedadam", {"strategy_options": {"server_lr": 0.02}}, "eta", 0.02),
        ("fedyogi", {"strategy_options": {"tau": 0.5}}, "tau", 0.5),
        ("fedavgm", {"strategy_options": {"server_momentum": 0.5}}, "server_momentum", 0.5),
        ("fedtrimmedavg", {"strategy_options": {"trim_beta": 0.1}}, "beta", 0.1),
        ("bnp_matching", {"matching": {"iterations": 5}}, "matching", None),
    ],
)
def test_each_strategy_gets_the_settings_its_table_row_lists(name, federated, attribute, value):
    experiment = _experiment(name, **federated)
    strategy = build_strategy(experiment)
    got = getattr(strategy.flower, attribute)
    assert got is experiment.federated.matching if value is None else got == value


def test_the_adapters_match_the_strategies_that_carry_state():
    kinds = {name: type(build_strategy(_experiment(name))) for name in ("fedavg", "fedadam", "fedavgm", "bnp_matching")}
    assert kinds == {"fedavg": ServerStrategy, "fedadam": CarriedArrays, "fedavgm": CarriedArrays,
                     "bnp_matching": DirectAggregation}


def test_an_unknown_strategy_is_refused_by_the_config_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"federated\.strategy.*fedavgm"):
        _experiment("fedavgn")


def test_a_strategy_missing_from_one_table_stops_the_server_module_from_importing(monkeypatch):
    # Prepare: the config lists a strategy that has no builder
    monkeypatch.setitem(federated_config.STRATEGY_SETTINGS, "fedfancy", ())
    # Execute / Assert
    try:
        with pytest.raises(ImportError, match="fedfancy"):
            importlib.reload(strategy_factory)
    finally:
        monkeypatch.undo()
        importlib.reload(strategy_factory)
