"""Matching with growth (PFNM's new units, design section 7): cap, zero-fill, recovery, slices, rounds."""

import pytest
import torch
from torch.nn import functional as F

from strategies.matching import (
    ClientUpdate,
    MatchingConfig,
    MatchingError,
    apply_permutations,
    build_spec,
    client_slice,
    default_index_maps,
    match_and_merge,
    random_permutations,
    widths_of,
)
from tests.strategies.helpers import images, noisy, outputs, tiny_model

TASK = {"classification": 10}


@pytest.fixture(scope="module")
def model():
    return tiny_model(tasks=("classification",))


def _fresh_mlp_units(state, seed):
    """``state`` with every MLP hidden unit (linear1 rows + bias, linear2 columns) redrawn: nothing to match."""
    generator = torch.Generator().manual_seed(seed)
    out = dict(state)
    for name, value in state.items():
        if ".mlp." in name and not name.endswith("linear2.bias"):
            out[name] = torch.randn(value.shape, generator=generator, dtype=value.dtype) * value.std()
    return out


def _mlp(state, block, x):
    p = f"encoder.blocks.{block}.mlp."
    hidden = F.gelu(x @ state[p + "linear1.weight"].T + state[p + "linear1.bias"])
    return hidden @ state[p + "linear2.weight"].T + state[p + "linear2.bias"]


def test_growth_off_returns_no_maps_and_no_grown_counts(spec, base):
    # Prepare
    clients = {c: ClientUpdate(noisy(base, 0.05, i), 10, TASK) for i, c in enumerate(("a", "b"))}
    # Execute
    result = match_and_merge(clients, spec, config=MatchingConfig(gamma=5.0, growth_cap=3.0))
    plain = match_and_merge(clients, spec, config=MatchingConfig())
    # Assert: growth options are inert while growth is off
    assert result.index_maps == {} and result.diagnostics.grown == {}
    assert not any(k.startswith("matching/grown") for k in result.diagnostics.summary())
    assert all(torch.equal(result.state_dict[k], plain.state_dict[k]) for k in plain.state_dict)


def test_spec_flags_only_mlp_and_conv_block_hidden_groups(spec):
    assert spec.growable
    assert all(g.endswith(".mlp") or g.endswith(".hidden") for g in spec.growable)
    assert "encoder.residual" not in spec.growable
    assert not any(".attn." in g for g in spec.growable)


@pytest.mark.parametrize(("cap", "clients"), [(2.0, 3), (1.5, 3), (4.0, 3), (1.0, 2)])
def test_disjoint_units_grow_up_to_the_cap_and_never_beyond(spec, base, cap, clients):
    # Prepare: clients share everything except their MLP units, which are independent draws
    updates = {f"c{i}": ClientUpdate(_fresh_mlp_units(base, i), 10 + i, TASK) for i in range(clients)}
    # Execute
    result = match_and_merge(updates, spec, config=MatchingConfig(growth=True, growth_cap=cap))
    # Assert: every MLP opens new units until the cap (or until all units are separate)
    widths = widths_of(result.state_dict, spec)
    for group in spec.growable:
        size = spec.group_sizes[group]
        if group.endswith(".mlp"):
            assert widths[group] == min(int(cap * size), clients * size)
            assert result.diagnostics.grown[group] == widths[group] - size
        for maps in result.index_maps.values():
            assert maps[group].unique().numel() == size and int(maps[group].max()) < widths[group]
    summary = result.diagnostics.summary()
    assert summary["matching/grown"] == sum(result.diagnostics.grown.values())


@pytest.mark.parametrize("weights", [(10, 13), (5, 40)])
def test_grown_mlp_output_is_the_weighted_mean_of_the_client_outputs(spec, base, weights):
    # Prepare: two clients sharing the incoming side of the block (LayerNorm, residual) but not the MLP units
    updates = {f"c{i}": ClientUpdate(_fresh_mlp_units(base, i), n, TASK) for i, n in enumerate(weights)}
    x = torch.randn(3, 5, base["encoder.norm.weight"].numel(), dtype=torch.float64)
    # Execute
    result = match_and_merge(updates, spec, config=MatchingConfig(growth=True))
    # Assert: zero-filled outgoing weights keep the block output the n-weighted mean of the clients'
    assert all(torch.equal(p["encoder.residual"], torch.arange(p["encoder.residual"].numel()))
               for p in result.permutations.values())
    for block in (0, 1):
        want = sum(n * _mlp(u.state, block, x) for n, u in zip(weights, updates.values(), strict=True)) / sum(weights)
        assert torch.allclose(_mlp(result.state_dict, block, x), want, atol=1e-10)


@pytest.mark.parametrize("tasks", [("classification",), ("classification", "segmentation", "detection")])
def test_permuted_copies_do_not_grow_and_recover_the_model(tasks):
    # Prepare: three differently permuted copies of one model
    model = tiny_model(tasks=tasks)
    spec = build_spec(model)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(3)
    counts = dict.fromkeys(tasks, 10)
    updates = {
        f"c{i}": ClientUpdate(apply_permutations(base, spec, random_permutations(spec, generator)), 10 + i, counts)
        for i in range(3)
    }
    x = images()
    # Execute
    result = match_and_merge(updates, spec, config=MatchingConfig(growth=True))
    # Assert: every unit joins, the merged model is the original function, each slice is its client
    assert set(result.diagnostics.grown.values()) == {0}
    want = outputs(model, base, x)
    got = outputs(model, result.state_dict, x)
    assert all(torch.allclose(got[t], want[t], atol=1e-9) for t in tasks)
    for cid, update in updates.items():
        mine = outputs(model, client_slice(result.state_dict, spec, result.index_maps[cid]), x)
        theirs = outputs(model, update.state, x)
        assert all(torch.allclose(mine[t], theirs[t], atol=1e-9) for t in tasks)


def test_client_slice_has_configured_shapes_and_holds_the_clients_units(spec, base):
    # Prepare: a grown global from two disjoint clients
    updates = {f"c{i}": ClientUpdate(_fresh_mlp_units(base, i), 10, TASK) for i in range(2)}
    result = match_and_merge(updates, spec, config=MatchingConfig(growth=True))
    for cid, update in updates.items():
        # Execute
        sliced = client_slice(result.state_dict, spec, result.index_maps[cid])
        # Assert: configured shapes; the MLP incoming weights are exactly the client's (one holder per unit)
        assert {k: v.shape for k, v in sliced.items()} == {k: v.shape for k, v in base.items()}
        for block in (0, 1):
            name = f"encoder.blocks.{block}.mlp.linear1.weight"
            assert torch.allclose(sliced[name], update.state[name], atol=1e-12)


def test_second_round_keeps_the_maps_and_a_new_client_gets_a_default_slice(spec, base):
    # Prepare: round 1 grows; in round 2 each client returns its slice plus small training noise
    updates = {f"c{i}": ClientUpdate(_fresh_mlp_units(base, i), 10, TASK) for i in range(2)}
    first = match_and_merge(updates, spec, config=MatchingConfig(growth=True))
    second = {
        c: ClientUpdate(noisy(client_slice(first.state_dict, spec, first.index_maps[c]), 0.01, 7 + i), 10, TASK)
        for i, c in enumerate(updates)
    }
    second["new"] = ClientUpdate(client_slice(first.state_dict, spec, default_index_maps(spec, {}, {})), 10, TASK)
    # Execute
    result = match_and_merge(second, spec, previous=first.state_dict, config=MatchingConfig(growth=True),
                             index_maps=first.index_maps)
    # Assert: nothing new to explain, so the width stays and every returning site keeps its units
    assert widths_of(result.state_dict, spec) == widths_of(first.state_dict, spec)
    for cid in updates:
        assert all(torch.equal(result.index_maps[cid][g], first.index_maps[cid][g]) for g in spec.growable)
    assert set(result.index_maps) == {"c0", "c1", "new"}


def test_default_slice_prefers_the_most_held_units(spec):
    # Prepare: two known sites that both hold units 4..7 of a group of width 8 grown to 12
    group = sorted(spec.growable)[0]
    size = spec.group_sizes[group]
    widths = {g: spec.group_sizes[g] for g in spec.growable} | {group: size + 4}
    held = torch.arange(4, 4 + size)
    known = {s: {g: torch.arange(spec.group_sizes[g]) for g in spec.growable} | {group: held} for s in ("a", "b")}
    # Execute
    maps = default_index_maps(spec, widths, known)
    # Assert
    assert torch.equal(maps[group], held)


def test_an_invalid_index_map_is_rejected_with_the_client_named(spec, base):
    updates = {"a": ClientUpdate(base, 10, TASK)}
    bad = {g: torch.zeros(spec.group_sizes[g], dtype=torch.int64) for g in spec.growable}
    with pytest.raises(MatchingError, match="client 'a'"):
        match_and_merge(updates, spec, config=MatchingConfig(growth=True), index_maps={"a": bad})


@pytest.mark.parametrize(("field", "value"), [("gamma", 0.0), ("gamma", float("inf")), ("growth_cap", 0.5)])
def test_growth_settings_are_checked(field, value):
    with pytest.raises(MatchingError, match=field):
        MatchingConfig(growth=True, **{field: value})
