"""A reply decoded into its one record: site named, metrics and arrays read, fused evaluation kept."""

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict

from strategies import keys
from strategies.packing import pack_content
from strategies.replies import decode_reply, site_name


def _reply(content: RecordDict, node: int = 4) -> Message:
    metadata = Metadata(run_id=1, message_id="", src_node_id=node, dst_node_id=0, reply_to_message_id="m",
                        group_id="", created_at=0.0, ttl=10.0, message_type="train")
    return Message(content=content, metadata=metadata)


def _content(**extra) -> RecordDict:
    arrays = ArrayRecord({"w": Array(np.arange(6, dtype=np.float32).reshape(2, 3)), "n": Array(np.array(3))})
    return RecordDict({keys.ARRAYS: arrays, keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 12}), **extra})


def test_a_packed_training_reply_decodes_into_one_record():
    # Prepare
    content = _content(
        **{keys.SITE: ConfigRecord({keys.SITE_NAME: "hospital-a"}), keys.PRIOR_EVAL: ConfigRecord({"x": 0.5})}
    )
    pack_content(content)
    # Execute
    record = decode_reply(_reply(content))
    # Assert
    assert (record.node_id, record.site, record.num_examples) == (4, "hospital-a", 12)
    np.testing.assert_array_equal(record.arrays["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert record.arrays["n"].dtype == np.int64 and record.prior_eval == {"x": 0.5}


def test_an_unnamed_reply_is_named_by_the_caller_or_by_its_node():
    # Prepare
    reply = _reply(_content(), node=7)
    # Execute / Assert
    assert site_name(reply) is None
    assert decode_reply(reply).site == "node-7"
    assert decode_reply(reply, site="known-site").site == "known-site"


def test_an_evaluation_reply_decodes_without_arrays():
    record = decode_reply(_reply(RecordDict({keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 3})})), with_arrays=False)
    assert record.arrays == {} and record.prior_eval is None and record.num_examples == 3
