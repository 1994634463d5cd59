"""Coordinate ascent of one client onto a target: recovers known permutations, never lowers the objective."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from strategies.matching import SpecBuilder, align, apply_permutations, build_spec, invert, random_permutations
from strategies.matching.align import alignment_objective
from strategies.matching.layers import layer_norm, linear
from tests.strategies.helpers import noisy, tiny_model


def _mlp_spec(width: int, hidden: int):
    # x -> fc1 -> relu -> fc2 -> norm: the hidden units and the output units are both permutable.
    b = SpecBuilder()
    out = b.group("out", width)
    mid = b.group("hidden", hidden)
    linear(b, "fc1", mid, None)
    linear(b, "fc2", out, mid)
    layer_norm(b, "norm", out)
    return b.build()


def _mlp_state(width: int, hidden: int, seed: int = 0):
    torch.manual_seed(seed)
    fc1, fc2 = nn.Linear(5, hidden), nn.Linear(hidden, width)
    return {
        "fc1.weight": fc1.weight.detach(), "fc1.bias": fc1.bias.detach(),
        "fc2.weight": fc2.weight.detach(), "fc2.bias": fc2.bias.detach(),
        "norm.weight": 1 + 0.1 * torch.randn(width), "norm.bias": 0.1 * torch.randn(width),
    }


@pytest.mark.parametrize(("width", "hidden"), [(4, 6), (8, 32), (16, 64)])
def test_recovers_a_known_permutation_of_a_toy_mlp(width, hidden):
    # Prepare
    spec = _mlp_spec(width, hidden)
    target = _mlp_state(width, hidden)
    perms = random_permutations(spec, torch.Generator().manual_seed(width))
    client = apply_permutations(target, spec, perms)

    # Execute
    result = align(client, target, spec, dict.fromkeys(target, 1.0))

    # Assert
    for group, perm in invert(perms).items():
        assert torch.equal(result.perms[group], perm), group


@pytest.mark.parametrize("noise", [0.5, 2.0])
def test_objective_never_decreases_and_beats_identity(noise):
    # Prepare
    model = tiny_model()
    spec = build_spec(model)
    target = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    perms = random_permutations(spec, torch.Generator().manual_seed(2))
    client = apply_permutations(noisy(target, noise, 1), spec, perms)
    weights = {k: 1.0 / float(v.pow(2).mean()) for k, v in target.items()}

    # Execute
    result = align(client, target, spec, weights)

    # Assert
    trace = result.objective
    assert all(b >= a - 1e-9 * abs(a) for a, b in itertools.pairwise(trace)), trace
    exact = alignment_objective(apply_permutations(client, spec, result.perms), target, weights)
    assert exact == pytest.approx(trace[-1], rel=1e-9)
    assert exact >= result.objective_identity
    assert result.start in ("features", "identity")
    assert 1 <= result.sweeps <= 10


def test_starting_from_given_permutations_keeps_an_optimum():
    # Prepare
    spec = _mlp_spec(8, 16)
    target = _mlp_state(8, 16)
    perms = random_permutations(spec, torch.Generator().manual_seed(0))
    client = apply_permutations(target, spec, perms)

    # Execute
    result = align(client, target, spec, dict.fromkeys(target, 1.0), init=invert(perms))

    # Assert
    assert result.start == "given" and result.sweeps == 1
    assert result.objective[0] == result.objective[-1]


def test_tensors_with_zero_weight_are_ignored():
    # Prepare: only the LayerNorm (output units) carries information; hidden units stay as they are.
    spec = _mlp_spec(8, 16)
    target = _mlp_state(8, 16)
    perms = random_permutations(spec, torch.Generator().manual_seed(3))
    client = apply_permutations(target, spec, perms)
    weights = {"norm.weight": 1.0, "norm.bias": 1.0, "fc1.weight": 0.0}

    # Execute
    result = align(client, target, spec, weights)

    # Assert
    assert torch.equal(result.perms["out"], invert(perms)["out"])
    assert torch.equal(result.perms["hidden"], torch.arange(16))


def test_bad_sweep_cap_raises():
    spec = _mlp_spec(4, 6)
    state = _mlp_state(4, 6)
    with pytest.raises(ValueError, match="max_sweeps"):
        align(state, state, spec, dict.fromkeys(state, 1.0), max_sweeps=0)
