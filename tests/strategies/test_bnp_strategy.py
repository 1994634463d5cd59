"""The Flower strategy around the matching core, on fabricated replies (no processes, no training)."""

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from mtmedformer import TASKS
from mtmedformer.config import config_from_dict
from mtmedformer.models import build_model
from server.strategy_factory import build_strategy
from strategies import keys
from strategies.bnp_matching import BNPMatching
from strategies.matching import apply_permutations, random_permutations
from strategies.server_strategy import DirectAggregation

CFG = config_from_dict(
    {
        "data": {"image_size": 32},
        "model": {"patch_size": 8, "depth": 1, "seg_feature_size": 4, "detection": {"feature_size": 4, "stride": 8}},
        "federated": {"strategy": "bnp_matching"},
    }
)


def _instruction(node: int) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    return Message(content=RecordDict(), dst_node_id=node, message_type="train")


def _reply(node: int, state, n: int, counts: dict[str, int]) -> Message:
    metrics = {keys.NUM_EXAMPLES: n}
    for task in TASKS:
        metrics[keys.task_count_key(task)] = counts.get(task, 0)
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord({k: v.clone() for k, v in state.items()}),
            keys.METRICS: MetricRecord(metrics),
            keys.SITE: ConfigRecord({keys.SITE_NAME: f"site-{node}"}),
        }
    )
    return Message(content=content, reply_to=_instruction(node))


def _outputs(model, state, x):
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        out = model(x)
    return out["classification"], out["segmentation"]


@pytest.fixture
def strategy_and_model():
    torch.manual_seed(0)
    strategy = build_strategy(CFG).flower
    model = build_model(CFG.model, 32, 2)
    return strategy, model


def test_factory_builds_the_matching_strategy_behind_direct_aggregation():
    strategy = build_strategy(CFG)
    assert isinstance(strategy, DirectAggregation) and isinstance(strategy.flower, BNPMatching)
    assert strategy.flower.matching == CFG.federated.matching  # the config's own settings object, not a copy


def test_permuted_copies_merge_back_to_the_same_function(strategy_and_model):
    # Prepare: three sites hold functionally identical, differently permuted copies of one model
    strategy, model = strategy_and_model
    base = {k: v.double() for k, v in model.state_dict().items()}
    model = model.double()
    all_tasks = {t: 10 for t in TASKS}
    replies = [
        _reply(
            node,
            apply_permutations(
                base, strategy.spec, random_permutations(strategy.spec, torch.Generator().manual_seed(node))
            ),
            10 + node,
            all_tasks,
        )
        for node in (1, 2, 3)
    ]
    # Execute: first round, no previous global (one-shot merge)
    arrays, metrics = strategy.aggregate_train(1, replies)
    merged = arrays.to_torch_state_dict()
    # Assert
    x = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    for got, want in zip(_outputs(model, merged, x), _outputs(model, base, x), strict=True):
        assert torch.allclose(got, want, atol=1e-8)
    assert any(k.startswith("matching/moved/") for k in metrics)
    assert metrics[keys.NUM_EXAMPLES] == 36  # counts are summed over sites


def test_failed_replies_are_skipped_and_an_untrained_head_is_ignored(strategy_and_model):
    # Prepare: site 3 failed; site 2 did not train segmentation and its segmentation head is garbage
    strategy, model = strategy_and_model
    base = model.state_dict()
    garbage = {
        k: (torch.randn_like(v) * 100 if k.startswith("heads.segmentation.") and v.is_floating_point() else v)
        for k, v in base.items()
    }
    replies = [
        _reply(1, base, 10, {t: 10 for t in TASKS}),
        _reply(2, garbage, 10, {"classification": 10, "detection": 10}),
        Message(Error(code=0, reason="client raised"), reply_to=_instruction(3)),
    ]
    strategy.previous = {k: v.clone() for k, v in base.items()}
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    merged = arrays.to_torch_state_dict()
    # Assert: identical frames, so the segmentation head is site 1's, the encoder the mean of two equal copies
    for name, value in base.items():
        if value.is_floating_point():
            assert torch.allclose(merged[name], value, atol=1e-5), name
        assert merged[name].dtype == value.dtype


def test_no_valid_reply_gives_no_aggregate(strategy_and_model):
    strategy, _ = strategy_and_model
    arrays, metrics = strategy.aggregate_train(1, [Message(Error(code=0, reason="x"), reply_to=_instruction(1))])
    assert arrays is None and metrics is None
