"""Sections 9.2-9.3: permuted copies are recovered exactly; permuted noisy copies approach the oracle average."""

from __future__ import annotations

import pytest
import torch

from strategies.matching import (
    ClientUpdate,
    MatchingConfig,
    apply_permutations,
    build_spec,
    compose,
    invert,
    match_and_merge,
    random_permutations,
)
from tests.strategies.helpers import images, max_relative_change, noisy, outputs, tiny_model, weighted_average

TASKS = ("classification", "segmentation", "detection")


def _permuted_clients(state, spec, counts, seed, noise=0.0):
    clients, truths, plain = {}, {}, []
    for j, n in enumerate(counts):
        perms = random_permutations(spec, torch.Generator().manual_seed(seed + j))
        local = noisy(state, noise, seed=100 + j) if noise else state
        plain.append(local)
        clients[f"site-{j}"] = ClientUpdate(apply_permutations(local, spec, perms), n, dict.fromkeys(TASKS, n))
        truths[f"site-{j}"] = perms
    return clients, truths, plain


@pytest.mark.parametrize("with_previous", [False, True], ids=["one-shot", "previous-global"])
@pytest.mark.parametrize(("embed_dim", "num_heads"), [(32, 4), (48, 3)])
def test_permuted_copies_merge_back_to_the_model(with_previous, embed_dim, num_heads):
    # Prepare
    model = tiny_model(embed_dim=embed_dim, num_heads=num_heads)
    spec = build_spec(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    counts = [30, 10, 60]
    clients, _, _ = _permuted_clients(state, spec, counts, seed=11)
    previous = state if with_previous else None
    x = images()
    expected = outputs(model, state, x)

    # Execute
    result = match_and_merge(clients, spec, previous=previous)
    fedavg = weighted_average([c.state for c in clients.values()], counts)

    # Assert
    merged = outputs(model, result.state_dict, x)
    assert max(float((expected[t] - merged[t]).abs().max()) for t in expected) <= 1e-10
    assert max_relative_change(expected, outputs(model, fedavg, x)) > 0.05
    if with_previous:  # the previous global model is the frame: never permuted, so the weights match too
        for key, value in state.items():
            torch.testing.assert_close(result.state_dict[key], value, rtol=0, atol=1e-12)


def _distance(state, oracle):
    return sum(float((state[k].double() - v.double()).pow(2).sum()) for k, v in oracle.items() if v.is_floating_point())


@pytest.mark.parametrize(
    ("noise", "with_previous", "min_agreement"),
    [(0.5, True, 1.0), (0.5, False, 1.0), (2.0, True, 0.3)],
    ids=["moderate-noise", "moderate-noise-one-shot", "strong-noise"],
)
def test_noisy_permuted_copies_approach_the_oracle_average(noise, with_previous, min_agreement):
    # Prepare: client j holds perm_j(base + noise_j) with a noise RMS of `noise` times each tensor's RMS.
    model = tiny_model()
    spec = build_spec(model)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    counts = [20, 50, 30]
    clients, truths, plain = _permuted_clients(base, spec, counts, seed=21, noise=noise)

    # Execute
    result = match_and_merge(clients, spec, previous=base if with_previous else None)

    # Assert: in the global frame, client j's true alignment is inverse(perm_j) followed by the frame's perm.
    frame = {} if with_previous else truths[result.diagnostics.reference]
    oracle = apply_permutations(weighted_average(plain, counts), spec, frame)
    agreement = {
        group: sum(
            float((result.permutations[cid][group] == compose(invert(truths[cid]), frame)[group]).double().mean())
            for cid in truths
        )
        / len(truths)
        for group in spec.group_sizes
    }
    worst = min(agreement, key=agreement.get)
    assert agreement[worst] >= min_agreement, f"per-group agreement with the true permutations: {agreement}"
    fedavg = weighted_average([c.state for c in clients.values()], counts)
    assert _distance(result.state_dict, oracle) <= _distance(fedavg, oracle)
    if agreement[worst] == 1.0:
        assert _distance(result.state_dict, oracle) <= 1e-20


def test_matching_is_never_worse_than_fedavg_on_already_aligned_noisy_copies():
    # Prepare: no permutation at all, only noise: matching must keep (almost) all units in place.
    model = tiny_model()
    spec = build_spec(model)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    counts = [10, 20, 40]
    plain = [noisy(base, 0.1, seed=300 + j) for j in range(3)]
    clients = {
        f"s{j}": ClientUpdate(s, n, dict.fromkeys(TASKS, n)) for j, (s, n) in enumerate(zip(plain, counts, strict=True))
    }

    # Execute
    result = match_and_merge(clients, spec, previous=base, config=MatchingConfig(seed=3))

    # Assert
    fedavg = weighted_average(plain, counts)
    for key, value in fedavg.items():
        torch.testing.assert_close(result.state_dict[key], value, rtol=0, atol=1e-12)
