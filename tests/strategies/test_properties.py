"""Section 9.5: properties of match_and_merge (identity cases, invariances, determinism, dtypes, prior)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtmedformer.config.loader import FieldError
from strategies.matching import (
    ClientUpdate,
    MatchingConfig,
    MatchingError,
    SpecBuilder,
    apply_permutations,
    build_spec,
    match_and_merge,
    random_permutations,
)
from tests.strategies.helpers import images, noisy, outputs, tiny_model, weighted_average

ALL = {"classification": 1, "segmentation": 1, "detection": 1}


def _tasks(n: int) -> dict[str, int]:
    return dict.fromkeys(ALL, n)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _noisy_permuted_clients(base, spec, counts, noise=0.3, seed=0):
    clients = {}
    for j, n in enumerate(counts):
        perms = random_permutations(spec, torch.Generator().manual_seed(seed + j))
        state = apply_permutations(noisy(base, noise, seed + 50 + j), spec, perms)
        clients[f"site-{j}"] = ClientUpdate(state, n, _tasks(n))
    return clients


def _assert_same(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


@pytest.mark.parametrize("with_previous", [False, True])
def test_identical_inputs_give_the_same_model(base, spec, with_previous):
    # Prepare
    clients = {f"site-{j}": ClientUpdate(base, n, _tasks(n)) for j, n in enumerate([3, 9, 4])}

    # Execute
    result = match_and_merge(clients, spec, previous=base if with_previous else None)

    # Assert
    _assert_same(result.state_dict, base, atol=1e-12)
    assert all(stats.mean_moved == 0.0 for stats in result.diagnostics.groups.values())


def test_one_client_gives_itself(base, spec):
    # Prepare
    client = _noisy_permuted_clients(base, spec, [7])

    # Execute
    result = match_and_merge(client, spec)

    # Assert
    _assert_same(result.state_dict, client["site-0"].state)


def test_one_client_with_previous_gives_itself_in_the_previous_frame(model, base, spec):
    # Prepare
    client = _noisy_permuted_clients(base, spec, [7], noise=0.2)
    x = images()

    # Execute
    result = match_and_merge(client, spec, previous=base)

    # Assert: the same function as the client, expressed in the previous model's unit order.
    expected = outputs(model, client["site-0"].state, x)
    merged = outputs(model, result.state_dict, x)
    assert max(float((expected[t] - merged[t]).abs().max()) for t in expected) <= 1e-10
    model.load_state_dict(base)


def test_result_does_not_depend_on_client_order(base, spec):
    # Prepare
    clients = _noisy_permuted_clients(base, spec, [5, 8, 2, 6], noise=0.5)
    reversed_clients = dict(reversed(list(clients.items())))

    # Execute
    first = match_and_merge(clients, spec)
    second = match_and_merge(reversed_clients, spec)

    # Assert
    _assert_same(first.state_dict, second.state_dict)


def test_result_does_not_depend_on_re_permuting_a_client(base, spec):
    # Prepare
    clients = _noisy_permuted_clients(base, spec, [5, 8, 2], noise=0.3)
    extra = random_permutations(spec, torch.Generator().manual_seed(99))
    moved = dict(clients)
    moved["site-2"] = ClientUpdate(apply_permutations(clients["site-2"].state, spec, extra), 2, _tasks(2))

    # Execute
    first = match_and_merge(clients, spec, previous=base)
    second = match_and_merge(moved, spec, previous=base)

    # Assert
    _assert_same(first.state_dict, second.state_dict, atol=1e-12)


@pytest.mark.parametrize("prior_variance", [math.inf, 2.0])
def test_already_aligned_clients_keep_identity_permutations_and_give_weighted_average(base, spec, prior_variance):
    # Prepare
    counts = [4, 1, 5]
    states = [noisy(base, 0.05, seed=70 + j) for j in range(3)]
    clients = {f"site-{j}": ClientUpdate(s, n, _tasks(n)) for j, (s, n) in enumerate(zip(states, counts, strict=True))}

    # Execute
    result = match_and_merge(clients, spec, previous=base, config=MatchingConfig(prior_variance=prior_variance))

    # Assert: eta = J / (J + 1 / sigma0^2) with J = 3 clients (sum of rho = number of clients).
    assert all(torch.equal(p, torch.arange(p.numel())) for ps in result.permutations.values() for p in ps.values())
    eta = 1.0 if math.isinf(prior_variance) else 3 / (3 + 1 / prior_variance)
    fedavg = weighted_average(states, counts)
    expected = {k: (base[k] + eta * (v - base[k]) if v.is_floating_point() else base[k]) for k, v in fedavg.items()}
    _assert_same(result.state_dict, expected, atol=1e-12)
    assert result.diagnostics.server_steps["encoder"] == pytest.approx(eta)


def test_the_initial_pass_alone_recovers_permuted_copies(base, spec, caplog):
    # Prepare
    clients = {
        cid: ClientUpdate(apply_permutations(base, spec, random_permutations(spec, torch.Generator().manual_seed(j))),
                          3, _tasks(3))
        for j, cid in enumerate(["a", "b", "c"])
    }

    # Execute
    result = match_and_merge(clients, spec, previous=base, config=MatchingConfig(iterations=0))

    # Assert
    _assert_same(result.state_dict, base, atol=1e-12)
    assert result.diagnostics.iterations == 0
    assert "without leave-one-out passes" in caplog.text


def test_deterministic_under_a_seed(base, spec):
    # Prepare
    clients = _noisy_permuted_clients(base, spec, [5, 8, 2, 6], noise=1.5)

    # Execute
    runs = [match_and_merge(clients, spec, config=MatchingConfig(seed=4)) for _ in range(2)]

    # Assert
    _assert_same(runs[0].state_dict, runs[1].state_dict)
    for cid in clients:
        for group, perm in runs[0].permutations[cid].items():
            assert torch.equal(perm, runs[1].permutations[cid][group])


def test_dtypes_shapes_and_integer_buffers_are_preserved():
    # Prepare: a float32 model whose BatchNorm counters differ per client.
    model = tiny_model(dtype=torch.float32)
    spec = build_spec(model)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    clients = {}
    for j, n in enumerate([3, 4]):
        perms = random_permutations(spec, torch.Generator().manual_seed(j))
        state = apply_permutations(noisy(base, 0.1, j), spec, perms)
        state = {k: (v + 10 * (j + 1) if not v.is_floating_point() else v) for k, v in state.items()}
        clients[f"site-{j}"] = ClientUpdate(state, n, _tasks(n))

    # Execute
    with_previous = match_and_merge(clients, spec, previous=base).state_dict
    one_shot = match_and_merge(clients, spec).state_dict

    # Assert
    assert list(with_previous) == list(base) and list(one_shot) == list(base)  # state-dict key order
    for key, value in base.items():
        for merged in (with_previous, one_shot):
            assert merged[key].dtype == value.dtype and merged[key].shape == value.shape, key
        if not value.is_floating_point():
            assert torch.equal(with_previous[key], value)  # from the previous global model
            assert torch.equal(one_shot[key], clients["site-1"].state[key])  # from the reference client


def test_numpy_inputs_are_accepted(base, spec):
    # Prepare
    clients = _noisy_permuted_clients(base, spec, [5, 8], noise=0.2)
    as_numpy = {
        cid: ClientUpdate({k: v.numpy() for k, v in c.state.items()}, c.num_examples, c.task_counts)
        for cid, c in clients.items()
    }

    # Execute
    from_numpy = match_and_merge(as_numpy, spec, previous={k: v.numpy() for k, v in base.items()})
    from_torch = match_and_merge(clients, spec, previous=base)

    # Assert
    _assert_same(from_numpy.state_dict, from_torch.state_dict)


def _scalar_spec():
    b = SpecBuilder()
    b.add("w", None, None)
    return b.build()


def test_prior_formula_on_hand_worked_numbers():
    # Prepare: n = (1, 3) -> rho = (0.5, 1.5); sigma0^2 = 1 -> prior precision 1.
    # w_hat = (0.5 * 1 + 1.5 * 2) / 2 = 1.75; eta = 2 / (1 + 2) = 2/3; theta = 0 + 2/3 * 1.75 = 7/6.
    spec = _scalar_spec()
    previous = {"w": torch.zeros(2, 2, dtype=torch.float64)}
    clients = {
        "a": ClientUpdate({"w": torch.full((2, 2), 1.0, dtype=torch.float64)}, 1),
        "b": ClientUpdate({"w": torch.full((2, 2), 2.0, dtype=torch.float64)}, 3),
    }

    # Execute
    result = match_and_merge(clients, spec, previous=previous, config=MatchingConfig(prior_variance=1.0))

    # Assert
    expected = torch.full((2, 2), 7 / 6, dtype=torch.float64)
    torch.testing.assert_close(result.state_dict["w"], expected, rtol=0, atol=1e-15)
    assert result.diagnostics.server_steps["encoder"] == pytest.approx(2 / 3, abs=1e-15)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: {}, "no client updates"),
        (lambda c: {"a": ClientUpdate(c["a"].state, 0)}, "positive"),
        (lambda c: {"a": ClientUpdate({"w": torch.full((2, 2), math.nan)}, 1)}, "NaN"),
        (lambda c: {"a": ClientUpdate({"w": torch.zeros(3, 2)}, 1), "b": c["b"]}, "different model config"),
        (lambda c: {"a": ClientUpdate({"w": torch.zeros(2, 2), "extra": torch.zeros(1)}, 1)}, "extra"),
        (lambda c: {"a": ClientUpdate({}, 1)}, "missing"),
    ],
    ids=["no-clients", "zero-count", "nan", "shape", "uncovered-key", "missing-key"],
)
def test_bad_inputs_raise_matching_error(change, message):
    # Prepare
    clients = {"a": ClientUpdate({"w": torch.zeros(2, 2)}, 1), "b": ClientUpdate({"w": torch.ones(2, 2)}, 2)}

    # Execute / Assert
    with pytest.raises(MatchingError, match=message):
        match_and_merge(change(clients), _scalar_spec())


def test_a_task_without_a_head_raises(spec, base):
    # Execute / Assert
    with pytest.raises(MatchingError, match="no head for"):
        match_and_merge({"a": ClientUpdate(base, 3, {"survival": 3})}, spec)


@pytest.mark.parametrize(
    "kwargs",
    [{"prior_variance": 0.0}, {"iterations": -1}, {"max_sweeps": 0}, {"noise": "bayes"}, {"noise_floor": 0.0}],
)
def test_bad_config_raises(kwargs):
    with pytest.raises(FieldError, match=next(iter(kwargs))):
        MatchingConfig(**kwargs)


def test_numpy_arrays_keep_working_for_a_float16_client():
    # Prepare: half-precision clients are matched in float32 and returned in float16.
    spec = _scalar_spec()
    clients = {"a": ClientUpdate({"w": np.ones((2, 2), dtype=np.float16)}, 1),
               "b": ClientUpdate({"w": np.zeros((2, 2), dtype=np.float16)}, 1)}

    # Execute
    result = match_and_merge(clients, spec)

    # Assert
    assert result.state_dict["w"].dtype == torch.float16
    torch.testing.assert_close(result.state_dict["w"], torch.full((2, 2), 0.5, dtype=torch.float16))
