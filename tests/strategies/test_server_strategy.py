"""The round loop's strategy interface: Flower aggregation on screened replies, carried state, direct aggregation."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp.strategy import FedAdam, FedAvg, FedMedian
from flwr.supercore.task_identity import TaskIdentity

from strategies import keys
from strategies.replies import ScreenedReply
from strategies.server_strategy import (
    Aggregate,
    CarriedArrays,
    DirectAggregation,
    ServerStrategy,
    as_message,
)


def _reply(node: int, w: list[float], n: int, counts: int = 7) -> ScreenedReply:
    arrays = {"w": np.array(w, dtype=np.float32), "steps": np.array(counts, dtype=np.int64)}
    return ScreenedReply(node_id=node, site=f"site-{node}", metrics={keys.NUM_EXAMPLES: n}, arrays=arrays)


def _flower(cls=FedAvg, **kwargs):
    return cls(weighted_by_key=keys.NUM_EXAMPLES, arrayrecord_key=keys.ARRAYS, **kwargs)


def test_a_screened_reply_becomes_the_training_message_flower_reads():
    # Prepare
    reply = _reply(3, [1.0, 2.0], 5)
    # Execute
    msg = as_message(reply)
    # Assert
    assert msg.metadata.src_node_id == 3 and not msg.has_error()
    np.testing.assert_array_equal(msg.content[keys.ARRAYS]["w"].numpy(), reply.arrays["w"])
    assert dict(msg.content[keys.METRICS]) == {keys.NUM_EXAMPLES: 5}


def test_flower_fedavg_on_screened_replies_is_the_sample_weighted_mean():
    # Prepare: weights 1 and 3
    strategy = ServerStrategy(_flower())
    replies = [_reply(1, [1.0, 2.0], 1), _reply(2, [3.0, 4.0], 3)]
    # Execute
    out = strategy.aggregate_train(1, replies)
    # Assert
    assert isinstance(out, Aggregate)
    np.testing.assert_allclose(out.arrays["w"], [2.5, 3.5])
    assert out.metrics == {}  # Flower's default metric aggregation drops the weight key


def test_flower_median_on_screened_replies():
    strategy = ServerStrategy(_flower(FedMedian))
    replies = [_reply(1, [1.0, 9.0], 1), _reply(2, [2.0, 0.0], 1), _reply(3, [3.0, 1.0], 1)]
    out = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(out.arrays["w"], [2.0, 1.0])


def test_strategies_without_cross_round_state_save_and_restore_nothing():
    strategy = ServerStrategy(_flower())
    strategy.load_state_dict({})
    assert strategy.state_dict() == {}


def _adam_round(strategy: ServerStrategy, rnd: int, current: dict[str, np.ndarray], replies) -> dict[str, np.ndarray]:
    class Grid:
        def get_node_ids(self):
            return [1, 2]

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # creating Messages needs it
    strategy.configure_train(rnd, ArrayRecord({k: Array(v) for k, v in current.items()}), ConfigRecord(), Grid())
    return strategy.aggregate_train(rnd, replies).arrays


def _adam():
    return CarriedArrays(_flower(FedAdam, eta=0.1, min_available_nodes=2, min_train_nodes=2), ("m_t", "v_t"))


def test_fedopt_moments_survive_a_save_and_restore_between_rounds():
    # Prepare: two rounds in one strategy, and the same two rounds with a restore from saved state in between
    start = {"w": np.zeros(2, dtype=np.float32), "steps": np.array(0, dtype=np.int64)}
    round1 = [_reply(1, [1.0, 2.0], 1), _reply(2, [3.0, 4.0], 3)]
    round2 = [_reply(1, [0.5, 0.5], 1), _reply(2, [-1.0, 2.0], 1)]
    continuous = _adam()
    after1 = _adam_round(continuous, 1, start, round1)
    expected = _adam_round(continuous, 2, after1, round2)
    first = _adam()
    _adam_round(first, 1, start, round1)
    saved = first.state_dict()
    # Execute
    resumed = _adam()
    resumed.load_state_dict(saved)
    got = _adam_round(resumed, 2, after1, round2)
    # Assert
    assert set(saved) == {"m_t", "v_t"} and all(isinstance(v, torch.Tensor) for v in saved["m_t"].values())
    np.testing.assert_array_equal(got["w"], expected["w"])
    assert not np.array_equal(got["w"], _adam_round(_adam(), 2, after1, round2)["w"])  # the moments matter


def test_carried_arrays_round_trip_through_a_weights_only_checkpoint(tmp_path):
    # Prepare: moments as Flower keeps them, including the numpy scalar of a 0-d buffer
    flower = FedAdam()
    flower.m_t = {"w": np.arange(6, dtype=np.float32).reshape(2, 3).T, "steps": np.float64(2.5)}
    flower.v_t = None  # not set yet: left out
    torch.save(CarriedArrays(flower, ("m_t", "v_t")).state_dict(), tmp_path / "state.pt")
    # Execute
    restored = CarriedArrays(FedAdam(), ("m_t", "v_t"))
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    # Assert
    np.testing.assert_array_equal(restored.flower.m_t["w"], flower.m_t["w"])
    assert restored.flower.m_t["steps"].shape == () and float(restored.flower.m_t["steps"]) == 2.5
    assert restored.flower.v_t is None


def test_direct_aggregation_hands_the_screened_replies_to_the_strategy():
    # Prepare
    class Summing(FedAvg):
        def aggregate_replies(self, server_round, replies):
            return {"w": sum(r.arrays["w"] for r in replies)}, {"custom/round": float(server_round)}

    replies = [_reply(1, [1.0, 2.0], 1), _reply(2, [3.0, 4.0], 3)]
    # Execute
    out = DirectAggregation(Summing()).aggregate_train(4, replies)
    # Assert
    np.testing.assert_array_equal(out.arrays["w"], [4.0, 6.0])
    assert out.metrics == {"custom/round": 4.0}


def test_direct_aggregation_needs_aggregate_replies():
    with pytest.raises(TypeError, match="aggregate_replies"):
        DirectAggregation(FedAvg())


def test_the_default_metric_record_path_keeps_the_strategy_metrics():
    # Prepare: a Flower metric aggregation function that the strategy applies to the rebuilt replies
    def count(records, weighted_by_key):
        return MetricRecord({"replies": len(records)})

    strategy = ServerStrategy(_flower(train_metrics_aggr_fn=count))
    # Execute
    out = strategy.aggregate_train(1, [_reply(1, [1.0, 2.0], 1), _reply(2, [3.0, 4.0], 3)])
    # Assert
    assert out.metrics == {"replies": 2}
