"""The matching strategy with growth on fabricated replies: per-node slices, resumable maps, failures."""

import io

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Error, Message

from mtmedformer import TASKS
from mtmedformer.config import config_from_dict
from mtmedformer.models import build_model
from server.strategy_factory import build_strategy
from strategies import keys
from strategies.matching import client_slice, widths_of
from strategies.validation import check_update
from tests.strategies.test_bnp_strategy import _instruction, _reply

CFG = config_from_dict(
    {
        "data": {"image_size": 32},
        "model": {"patch_size": 8, "depth": 1, "seg_feature_size": 4, "detection": {"feature_size": 4, "stride": 8}},
        "federated": {"strategy": "bnp_matching", "matching": {"growth": True, "growth_cap": 2.0}},
    }
)
ALL_TASKS = dict.fromkeys(TASKS, 10)


class _Grid:
    """The part of a Flower grid the strategy's node sampling reads."""

    def __init__(self, nodes):
        self.nodes = list(nodes)

    def get_node_ids(self):
        return self.nodes


def _fresh_mlp_units(state, seed):
    generator = torch.Generator().manual_seed(seed)
    return {
        k: (torch.randn(v.shape, generator=generator) * v.std() if ".mlp." in k and not k.endswith("2.bias") else v)
        for k, v in state.items()
    }


def _arrays_by_node(messages):
    return {int(m.metadata.dst_node_id): m.content[keys.ARRAYS].to_torch_state_dict() for m in messages}


@pytest.fixture
def grown():
    """A strategy after one round in which sites 1 and 2 sent disjoint MLP units and site 3 failed."""
    torch.manual_seed(0)
    strategy = build_strategy(CFG)
    base = build_model(CFG.model, 32, 2).state_dict()
    _instruction(0)  # messages need a task identity outside a running ServerApp
    grid = _Grid([1, 2, 3])
    sent = strategy.configure_train(1, ArrayRecord(base), ConfigRecord({}), grid)
    replies = [
        _reply(1, _fresh_mlp_units(base, 1), 10, ALL_TASKS),
        _reply(2, _fresh_mlp_units(base, 2), 20, ALL_TASKS),
        Message(Error(code=0, reason="client raised"), reply_to=_instruction(3)),
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    return strategy, base, list(sent), arrays.to_torch_state_dict(), metrics, grid


def test_first_round_sends_the_configured_model_and_grows_the_global(grown):
    strategy, base, sent, state, metrics, _ = grown
    assert all(
        {k: v.shape for k, v in s.items()} == {k: v.shape for k, v in base.items()}
        for s in _arrays_by_node(sent).values()
    )
    widths = widths_of(state, strategy.spec)
    assert any(widths[g] > strategy.spec.group_sizes[g] for g in widths)
    assert all(widths[g] <= 2 * strategy.spec.group_sizes[g] for g in widths)
    assert metrics["matching/grown"] > 0
    assert set(strategy.book.maps) == {"site-1", "site-2"}
    assert check_update({k: v.numpy() for k, v in state.items()}, {k: v.numpy() for k, v in base.items()},
                        strategy.growable_axes()) is None


@pytest.mark.parametrize("phase", ["train", "evaluate"])
def test_each_node_gets_its_own_slice_and_an_unknown_node_the_default(grown, phase):
    # Prepare
    strategy, base, _, state, _, grid = grown
    # Execute
    configure = strategy.configure_train if phase == "train" else strategy.configure_evaluate
    sent = _arrays_by_node(configure(2, ArrayRecord(state), ConfigRecord({}), grid))
    # Assert: configured shapes; known sites hold their own units, the failed site 3 the default slice
    assert set(sent) == {1, 2, 3}
    for node, arrays in sent.items():
        assert {k: v.shape for k, v in arrays.items()} == {k: v.shape for k, v in base.items()}
        maps = strategy.book.maps.get(f"site-{node}")
        if maps is not None:
            want = client_slice(state, strategy.spec, maps)
            assert all(torch.equal(arrays[k], want[k]) for k in want)
    name = "encoder.blocks.0.mlp.linear1.weight"
    assert not torch.equal(sent[1][name], sent[2][name])
    reference = strategy.reply_reference({k: v.numpy() for k, v in state.items()})
    assert all(reference[k].shape == tuple(base[k].shape) for k in base)


def test_maps_survive_a_save_and_restore(grown):
    # Prepare: save the strategy state as the server does (torch.save, weights_only load)
    strategy, _, _, state, _, grid = grown
    buffer = io.BytesIO()
    torch.save(strategy.state_dict(), buffer)
    buffer.seek(0)
    restored = build_strategy(CFG)
    # Execute
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    before = _arrays_by_node(strategy.configure_train(2, ArrayRecord(state), ConfigRecord({}), grid))
    after = _arrays_by_node(restored.configure_train(2, ArrayRecord(state), ConfigRecord({}), grid))
    # Assert
    for node, arrays in before.items():
        assert all(torch.equal(arrays[k], after[node][k]) for k in arrays)


def test_second_round_aggregates_the_slices_without_further_growth(grown):
    # Prepare: both sites return the slice they were sent
    strategy, _, _, state, _, grid = grown
    sent = _arrays_by_node(strategy.configure_train(2, ArrayRecord(state), ConfigRecord({}), grid))
    replies = [_reply(node, sent[node], 10 * node, ALL_TASKS) for node in (1, 2)]
    # Execute
    arrays, _ = strategy.aggregate_train(2, replies)
    # Assert: same widths, the held units unchanged
    merged = arrays.to_torch_state_dict()
    assert widths_of(merged, strategy.spec) == widths_of(state, strategy.spec)
    name = "encoder.blocks.0.mlp.linear1.weight"
    assert torch.allclose(merged[name], state[name], atol=1e-5)
