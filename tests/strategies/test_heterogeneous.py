"""Section 9.4: unequal sizes and task sets; each head pools only the clients that trained it."""

from __future__ import annotations

import pytest
import torch

from strategies.matching import ClientUpdate, MatchingConfig, build_spec, match_and_merge
from tests.strategies.helpers import noisy, tiny_model, weighted_average


def _head_keys(state, task):
    return [k for k in state if k.startswith(f"heads.{task}.")]


@pytest.fixture(scope="module")
def setting():
    model = tiny_model()
    spec = build_spec(model)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    states = {f"site-{j}": noisy(base, 0.05, seed=40 + j) for j in range(3)}
    return spec, base, states


def test_heads_pool_only_their_clients_with_their_task_counts(setting):
    # Prepare: site-0 trains classification only, site-1 segmentation + classification, site-2 segmentation.
    spec, base, states = setting
    counts = {"site-0": 100, "site-1": 40, "site-2": 10}
    tasks = {
        "site-0": {"classification": 100},
        "site-1": {"classification": 15, "segmentation": 25},
        "site-2": {"segmentation": 10, "detection": 0},
    }
    clients = {cid: ClientUpdate(states[cid], counts[cid], tasks[cid]) for cid in states}

    # Execute
    result = match_and_merge(clients, spec, previous=base)

    # Assert: no unit moved (small noise), so every pool is an exact weighted average.
    assert all(stats.mean_moved == 0.0 for stats in result.diagnostics.groups.values())
    merged = result.state_dict
    encoder = weighted_average(list(states.values()), list(counts.values()))
    classification = weighted_average([states["site-0"], states["site-1"]], [100, 15])
    segmentation = weighted_average([states["site-1"], states["site-2"]], [25, 10])
    for key in merged:
        if key.startswith("heads.classification."):
            expected = classification[key]
        elif key.startswith("heads.segmentation."):
            expected = segmentation[key] if merged[key].is_floating_point() else base[key]
        elif key.startswith("heads.detection."):
            expected = base[key]  # trained by nobody: the previous global head, untouched
        else:
            expected = encoder[key] if merged[key].is_floating_point() else base[key]
        torch.testing.assert_close(merged[key], expected, rtol=0, atol=1e-12, msg=key)
    for key in _head_keys(merged, "detection"):
        assert torch.equal(merged[key], base[key])


def test_a_head_is_untouched_by_clients_without_its_task(setting):
    # Prepare: site-2 did not train detection and holds garbage there; it must not matter.
    spec, base, states = setting
    garbage = dict(states["site-2"])
    for key in _head_keys(garbage, "detection"):
        if garbage[key].is_floating_point():
            garbage[key] = garbage[key] * 0 + 1e3
    tasks = {"classification": 5, "segmentation": 5, "detection": 5}
    clean = {
        "site-0": ClientUpdate(states["site-0"], 5, tasks),
        "site-1": ClientUpdate(states["site-1"], 5, tasks),
        "site-2": ClientUpdate(states["site-2"], 5, {"classification": 5, "segmentation": 5}),
    }
    dirty = dict(clean, **{"site-2": ClientUpdate(garbage, 5, {"classification": 5, "segmentation": 5})})

    # Execute
    first = match_and_merge(clean, spec, previous=base).state_dict
    second = match_and_merge(dirty, spec, previous=base).state_dict

    # Assert
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_a_head_nobody_trained_keeps_the_reference_clients_head_without_previous(setting):
    # Prepare
    spec, _, states = setting
    clients = {
        "site-0": ClientUpdate(states["site-0"], 10, {"classification": 10}),
        "site-1": ClientUpdate(states["site-1"], 30, {"classification": 30}),
    }

    # Execute
    result = match_and_merge(clients, spec)

    # Assert
    assert result.diagnostics.reference == "site-1"
    for task in ("segmentation", "detection"):
        for key in _head_keys(states["site-1"], task):
            assert torch.equal(result.state_dict[key], states["site-1"][key])


def test_prior_damps_only_the_pools_that_have_clients(setting):
    # Prepare: sigma0^2 = 0.5 -> prior precision 2; the classification pool has 2 clients (sum rho = 2).
    spec, base, states = setting
    clients = {
        "site-0": ClientUpdate(states["site-0"], 10, {"classification": 30}),
        "site-1": ClientUpdate(states["site-1"], 30, {"classification": 10}),
    }

    # Execute
    result = match_and_merge(clients, spec, previous=base, config=MatchingConfig(prior_variance=0.5))

    # Assert: eta = 2 / (2 + 2) = 0.5 and theta = base + eta * (w_hat - base)
    assert result.diagnostics.server_steps["classification"] == pytest.approx(0.5)
    w_hat = weighted_average([states["site-0"], states["site-1"]], [30, 10])
    key = "heads.classification.fc.weight"
    torch.testing.assert_close(result.state_dict[key], base[key] + 0.5 * (w_hat[key] - base[key]), rtol=0, atol=1e-12)
    assert "detection" not in result.diagnostics.server_steps
    key = "heads.detection.cls_logits.weight"
    assert torch.equal(result.state_dict[key], base[key])
