"""The permutation spec as data: builder validation, coverage of the real model, documented groups."""

from __future__ import annotations

import pytest
import torch

from mtmedformer.config.model import ModelConfig
from mtmedformer.models import build_model
from strategies.matching import MatchingError, Segment, SpecBuilder, build_spec
from strategies.matching.spec import Occurrence
from tests.strategies.helpers import tiny_model


def _builder_with_groups():
    b = SpecBuilder()
    b.group("a", 4)
    b.group("h", 6)
    return b


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda b: b.add("w", (Segment("zz", 4),)), "undeclared group 'zz'"),
        (lambda b: b.add("w", (Segment("a", 3),)), "has 3 units, the group has 4"),
        (lambda b: (b.add("w", "a", "a"), b.add("v", "h")), "carries group 'a' on two axes"),
        (lambda b: b.add("w", "a"), r"used by no tensor: \['h'\]"),
        (lambda b: (b.add("w", "a", "h"), b.tie("t", ("h",), 4)), "4 blocks do not divide group 'h'"),
        (lambda b: (b.add("w", "a", "h"), b.tie("t", ("h",), 2), b.tie("u", ("h",), 3)), "more than one tie"),
        (lambda b: (b.add("w", "a", "h"), b.add("w", "a")), "twice"),
        (lambda b: b.add("w", "a", ()), "must be None or hold segments"),
    ],
    ids=["undeclared", "units", "two-axes", "unused", "tie-divides", "two-ties", "duplicate-key", "empty-axis"],
)
def test_builder_rejects_inconsistent_specs(build, message):
    b = _builder_with_groups()
    with pytest.raises(MatchingError, match=message):
        build(b)
        b.build()


def test_occurrences_are_the_inverse_map_with_offsets_and_other_axes():
    # Prepare
    b = SpecBuilder()
    qk, vo, res = b.group("qk", 4), b.group("vo", 4), b.group("res", 3)
    b.add("qkv.weight", b.axis(qk, qk, vo), res)
    b.add("flat", b.axis((None, 2), ("res", 3, 5)))

    # Execute
    spec = b.build()

    # Assert
    assert spec.occurrences["qk"] == (
        Occurrence("qkv.weight", 0, 0, 4, 1, frozenset({"res"})),
        Occurrence("qkv.weight", 0, 4, 4, 1, frozenset({"res"})),
    )
    assert spec.occurrences["vo"] == (Occurrence("qkv.weight", 0, 8, 4, 1, frozenset({"res"})),)
    assert Occurrence("flat", 0, 2, 3, 5, frozenset()) in spec.occurrences["res"]


def test_every_key_of_the_real_model_is_covered_for_each_config():
    # Prepare / Execute: default-size models for both decoder norms and task subsets, built without memory.
    for norm in ("instance", "batch"):
        for tasks in (("classification", "segmentation", "detection"), ("segmentation",), ("detection",)):
            with torch.device("meta"):
                model = build_model(ModelConfig(depth=2, decoder_norm=norm, tasks=tasks), 64, 2)
            spec = build_spec(model)

            # Assert
            spec.check_state(model.state_dict())
            assert set(spec.tensor_task.values()) == set(tasks)


def test_groups_follow_the_documented_names_and_sizes():
    # Prepare
    model = tiny_model(embed_dim=48, num_heads=3, depth=2)

    # Execute
    spec = build_spec(model)

    # Assert
    assert spec.group_sizes["encoder.residual"] == 48
    assert next(iter(spec.group_sizes)) == "encoder.residual"  # solved first
    for i in range(2):
        assert spec.group_sizes[f"encoder.blocks.{i}.mlp"] == 96
        tie = spec.tie_of[f"encoder.blocks.{i}.attn.qk"]
        assert tie.name == f"encoder.blocks.{i}.attn.heads" and tie.blocks == 3
        assert tie.groups == (f"encoder.blocks.{i}.attn.qk", f"encoder.blocks.{i}.attn.vo")
    qkv = spec.axes["encoder.blocks.0.attn.qkv.weight"]
    assert [seg.group for seg in qkv[0]] == ["encoder.blocks.0.attn.qk"] * 2 + ["encoder.blocks.0.attn.vo"]
    # Not permutable: class/mask/box outputs, input image channels, token positions.
    assert spec.axes["heads.classification.fc.weight"][0] is None
    assert spec.axes["heads.segmentation.out.conv.conv.weight"][0] is None
    assert spec.axes["heads.detection.bbox_reg.weight"][0] is None
    assert spec.axes["encoder.patch_embed.weight"][1] is None
    assert spec.axes["encoder.pos_embed"][1] is None
    # A decoder block reading cat(upsampled, skip) has the block-diagonal union on its input axis.
    conv1 = spec.axes["heads.segmentation.decoder.ups.stride1.conv_block.conv1.conv.weight"][1]
    assert [seg.group for seg in conv1] == [
        "heads.segmentation.decoder.ups.stride1.transp_conv",
        "heads.segmentation.pyramid.skips.stride1.layer.out",
    ]
    assert spec.axes["heads.segmentation.pyramid.skips.stride1.layer.norm1.num_batches_tracked"] == ()


def test_check_state_names_uncovered_missing_and_misshaped_keys():
    # Prepare
    model = tiny_model()
    spec = build_spec(model)
    state = dict(model.state_dict())

    # Execute / Assert
    with pytest.raises(MatchingError, match=r"no permutation-spec entry: \['heads.new.weight'\]"):
        spec.check_state({**state, "heads.new.weight": torch.zeros(1)}, origin="client 'x'")
    with pytest.raises(MatchingError, match=r"missing: \['encoder.norm.bias'\]"):
        spec.check_state({k: v for k, v in state.items() if k != "encoder.norm.bias"})
    with pytest.raises(MatchingError, match=r"'encoder\.norm\.bias' axis 0 has length 5"):
        spec.check_state({**state, "encoder.norm.bias": torch.zeros(5)})


def test_a_non_vit_model_is_rejected():
    with torch.device("meta"):
        model = build_model(ModelConfig(arch="cnn"), 64, 2)
    with pytest.raises(MatchingError, match="ViT encoder"):
        build_spec(model)
