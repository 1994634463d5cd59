"""The test-only fault mod: it fails the named partition in the named round and passes everything else."""

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fltesting.faults import InjectedFault, fail_at
from strategies import keys


def _message(rnd: int) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    content = RecordDict({keys.CONFIG: ConfigRecord({keys.SERVER_ROUND: rnd})})
    return Message(content, dst_node_id=1, message_type="train")


def _context(partition: int) -> Context:
    return Context(run_id=1, node_id=1, node_config={"partition-id": partition}, state=RecordDict(), run_config={})


@pytest.mark.parametrize(("partition", "rnd", "fails"), [(1, 2, True), (1, 3, False), (0, 2, False)])
def test_only_the_named_partition_fails_and_only_in_the_named_round(partition, rnd, fails):
    # Prepare
    mod = fail_at(partition=1, server_round=2)
    calls = []
    # Execute / Assert
    if fails:
        with pytest.raises(InjectedFault, match="partition 1, round 2"):
            mod(_message(rnd), _context(partition), lambda m, c: calls.append(m) or m)
    else:
        mod(_message(rnd), _context(partition), lambda m, c: calls.append(m) or m)
    assert len(calls) == (0 if fails else 1)


def test_round_zero_fails_every_round():
    mod = fail_at(partition=0, server_round=0)
    for rnd in (1, 2, 3):
        with pytest.raises(InjectedFault):
            mod(_message(rnd), _context(0), lambda m, c: m)
