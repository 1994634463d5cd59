"""Privacy options in the federated path: config validation, the epsilon accountant, DP runs in process."""

import json
import math

import numpy as np
import pytest
import torch
import yaml

from client.app import app as client_app
from fltesting.inprocess import InProcessGrid
from mtmedformer.config import config_from_dict
from mtmedformer.config.privacy import DPConfig
from mtmedformer.errors import ConfigError
from server.app import initial_state, run_experiment
from server.privacy import EPSILON, site_epsilon
from server.state import ServerState
from strategies import keys
from strategies.packing import decode_arrays
from tests.federated.conftest import settings_for, site_nodes


@pytest.mark.parametrize(
    ("federated", "reason"),
    [
        ({"strategy": "bnp_matching"}, "needs each site's weights in the clear"),
        ({"strategy": "fedmedian"}, "median needs every site's update"),
        ({"strategy": "fedtrimmedavg"}, "trimmed mean needs every site's update"),
        ({"strategy": "fedadam"}, "fedadam is not wired for secure aggregation"),
        ({"strategy": "fedavg", "fused_evaluation": True}, "cannot be combined with fused_evaluation"),
    ],
)
def test_secure_aggregation_is_refused_at_config_validation(federated, reason):
    with pytest.raises(ConfigError, match=r"federated\.privacy\.secure_aggregation") as info:
        config_from_dict({"federated": {**federated, "privacy": {"secure_aggregation": True}}})
    assert reason in str(info.value)


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox"])
def test_secure_aggregation_is_accepted_for_the_averaging_strategies(strategy):
    cfg = config_from_dict({"federated": {"strategy": strategy, "privacy": {"secure_aggregation": True}}})
    assert cfg.federated.privacy.secure_aggregation


@pytest.mark.parametrize(
    ("key", "value"),
    [("dp.clip_norm", float("nan")), ("dp.clip_norm", 0.0), ("dp.noise_multiplier", -1.0),
     ("dp.noise_multiplier", float("inf")), ("dp.delta", 1.0), ("dp.delta", float("nan")),
     ("secagg.num_shares", 0.0), ("secagg.reconstruction_threshold", 1.5), ("secagg.max_weight", float("inf")),
     ("secagg.clipping_range", -1.0)],
)
def test_privacy_settings_out_of_range_name_their_key_path(key, value):
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=rf"federated\.privacy\.{section}\.{name}"):
        config_from_dict({"federated": {"privacy": {section: {name: value}}}})


def test_dp_with_matching_is_a_valid_config():
    cfg = config_from_dict({"federated": {"strategy": "bnp_matching", "privacy": {"dp": {"noise_multiplier": 0.5}}}})
    assert cfg.federated.privacy.dp == DPConfig(noise_multiplier=0.5)


def _gaussian_epsilon(noise_multiplier, releases, delta):
    """Independent closed form: RDP of the Gaussian mechanism of sensitivity 2C and std zC is 2 a / z^2 per release
    (Mironov 2017, Prop. 7), converted to (eps, delta) by Canonne, Kamath and Steinke (2020) / Balle et al. (2020)."""
    orders = np.arange(1.01, 400.0, 0.01)
    rdp = releases * 2.0 * orders / noise_multiplier**2
    eps = rdp + np.log((orders - 1) / orders) - (np.log(delta) + np.log(orders)) / (orders - 1)
    return float(eps.min())


@pytest.mark.parametrize(("noise", "releases"), [(0.5, 3), (1.0, 10), (2.0, 5), (4.0, 100)])
def test_site_epsilon_matches_the_gaussian_rdp_closed_form(noise, releases):
    dp = DPConfig(clip_norm=3.0, noise_multiplier=noise, delta=1e-5)
    exact = _gaussian_epsilon(noise, releases, 1e-5)
    # the accountant searches a coarser grid of orders: never below the dense-grid optimum, and close to it
    assert exact <= site_epsilon(dp, releases) <= exact * 1.02


def test_site_epsilon_grows_with_rounds_and_has_no_guarantee_without_noise():
    dp = DPConfig(noise_multiplier=1.0)
    assert site_epsilon(dp, 0) == 0.0
    assert site_epsilon(dp, 1) < site_epsilon(dp, 2) < site_epsilon(dp, 20)
    assert site_epsilon(DPConfig(noise_multiplier=2.0), 5) < site_epsilon(dp, 5)
    assert site_epsilon(DPConfig(noise_multiplier=0.0), 1) == math.inf


def _capturing_grid(residuals):
    """A grid whose tamper hook records, per training reply, the float update the site sent (reply - global)."""
    grid = InProcessGrid(client_app, site_nodes(3))

    def capture(node, reply):
        if not reply.has_error() and keys.ARRAYS in reply.content:
            sent = decode_arrays(grid.sent[-1].content)
            received = decode_arrays(reply.content)
            floats = [k for k in sent if np.issubdtype(sent[k].dtype, np.floating)]
            residuals.append(np.concatenate([(received[k].astype(np.float64) - sent[k]).ravel() for k in floats]))
        return reply

    grid.tamper = capture
    return grid


def _rounds(run_dir):
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_every_site_sends_a_clipped_noised_update_and_the_run_reports_epsilon(tmp_path, experiment_file, noise):
    # Prepare
    clip = 0.01
    residuals = []
    experiment = experiment_file(federated={"privacy": {"dp": {"clip_norm": clip, "noise_multiplier": noise}}})
    # Execute
    run_experiment(_capturing_grid(residuals), settings_for(experiment, tmp_path))
    # Assert
    assert len(residuals) == 6  # 3 sites x 2 rounds
    for update in residuals:
        if noise == 0:
            assert np.linalg.norm(update) <= clip * (1 + 1e-3)  # clipped (float32 rounding aside)
        else:  # the noise dominates: per-coordinate RMS = z C (the clipped part adds at most C^2 / n)
            assert np.sqrt(np.mean(update**2)) == pytest.approx(noise * clip, rel=0.03)
    rounds = _rounds(tmp_path / "run")
    expected = [site_epsilon(DPConfig(clip, noise), r) for r in (1, 2)]
    assert [r[EPSILON] for r in rounds] == [e if math.isfinite(e) else None for e in expected]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "client-side DP (per site, against the server)" in report


def test_matching_runs_with_dp(tmp_path, experiment_file):
    experiment = experiment_file(
        federated={"strategy": "bnp_matching", "privacy": {"dp": {"clip_norm": 0.05, "noise_multiplier": 0.5}}}
    )
    run_experiment(InProcessGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path))
    rounds = _rounds(tmp_path / "run")
    assert [(r["round"], r["sites_trained"], r["failures"]) for r in rounds] == [(1, 3, 0), (2, 3, 0)]
    assert any(k.startswith("train/matching/") for k in rounds[-1])
    assert rounds[-1][EPSILON] == pytest.approx(site_epsilon(DPConfig(0.05, 0.5), 2))


def _final_state(run_dir):
    return ServerState.load(run_dir / "server_state.pt").global_state


SECAGG = {"secure_aggregation": True, "secagg": {"max_weight": 20, "clipping_range": 0.5}}


def test_secure_aggregation_gives_fedavg_up_to_quantisation(tmp_path, experiment_file):
    # Prepare: one round from the same seeded global; the sites train identically in both runs
    plain = experiment_file(federated={"rounds": 1})
    run_experiment(InProcessGrid(client_app, site_nodes(3)), settings_for(plain, tmp_path / "plain"))
    secure = experiment_file(federated={"rounds": 1, "privacy": SECAGG})
    replies = []
    grid = InProcessGrid(client_app, site_nodes(3), tamper=lambda node, reply: replies.append(reply) or reply)
    # Execute
    run_experiment(grid, settings_for(secure, tmp_path / "secure"))
    # Assert
    expected, got = _final_state(tmp_path / "plain" / "run"), _final_state(tmp_path / "secure" / "run")
    initial = initial_state(config_from_dict(yaml.safe_load(secure.read_text()))).global_state
    moved = max(float((expected[k].double() - initial[k].double()).abs().max()) for k in expected)
    error = max(float((expected[k].double() - got[k].double()).abs().max()) for k in expected)
    # quantisation step: 2 * clipping_range / 2^22 on num-examples / max_weight (about 1/2 here) times the update
    assert moved > 1e-3 and error < 1e-5
    rounds = _rounds(tmp_path / "secure" / "run")
    assert [(r["sites_trained"], r["failures"]) for r in rounds] == [(3, 0)]
    sites = [json.loads(line) for line in (tmp_path / "secure" / "run" / "sites.jsonl").read_text().splitlines()]
    assert {s["site"] for s in sites if s["phase"] == "train"} == {"site-a", "site-b", "site-c"}
    # the protocol ran its four exchanges, and no training reply carried an array in the clear
    trained = [r for r in replies if r.metadata.message_type == "train"]
    assert len(trained) == 4 * 3
    assert all(len(record) == 0 for r in trained for record in r.content.array_records.values())


def test_a_site_whose_update_exceeds_the_quantisation_range_is_left_out(tmp_path, experiment_file):
    tight = {"secure_aggregation": True, "secagg": {"max_weight": 20, "clipping_range": 1e-9}}
    experiment = experiment_file(federated={"rounds": 1, "privacy": tight})
    run_experiment(InProcessGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path))
    initial = initial_state(config_from_dict(yaml.safe_load(experiment.read_text()))).global_state
    final = _final_state(tmp_path / "run")
    assert all(torch.equal(initial[k], final[k]) for k in initial)  # no sum, no change
    failures = [json.loads(line) for line in (tmp_path / "run" / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == 3 and all("not in the secure sum" in f["reason"] for f in failures)
