"""Section 2 of the design reference: valid permutations keep every task output, invalid ones change them."""

from __future__ import annotations

import pytest
import torch

from strategies.matching import apply_permutations, build_spec, random_permutations
from strategies.matching.permute import block_permutation
from tests.strategies.helpers import images, max_relative_change, outputs, tiny_model


@pytest.mark.parametrize(
    ("dtype", "norm", "embed_dim", "num_heads", "tolerance"),
    [
        (torch.float64, "batch", 32, 4, 1e-10),
        (torch.float64, "instance", 48, 3, 1e-10),
        (torch.float64, "batch", 64, 2, 1e-10),
        (torch.float32, "batch", 32, 4, 1e-5),
    ],
)
def test_random_valid_permutations_of_all_groups_keep_every_output(dtype, norm, embed_dim, num_heads, tolerance):
    # Prepare
    model = tiny_model(embed_dim=embed_dim, num_heads=num_heads, norm=norm, dtype=dtype)
    spec = build_spec(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = images(dtype=dtype)
    before = outputs(model, state, x)
    perms = random_permutations(spec, torch.Generator().manual_seed(3))

    # Execute
    after = outputs(model, apply_permutations(state, spec, perms), x)

    # Assert
    assert all(not torch.equal(p, torch.arange(p.numel())) for p in perms.values() if p.numel() > 3)
    if dtype == torch.float64:
        assert max(float((before[t] - after[t]).abs().max()) for t in before) <= tolerance
    else:
        assert max_relative_change(before, after) <= tolerance


@pytest.mark.parametrize(
    "kwargs",
    [
        {"qkv_bias": False},
        {"detection_stride": 8},
        {"tasks": ("detection",), "norm": "instance"},
        {"cls_pool": "mean", "tasks": ("classification", "segmentation"), "norm": "instance"},
        {"cls_pool": "mean", "cls_descriptors": True},
        {"cls_descriptors": True},
    ],
    ids=[
        "no-qkv-bias", "detection-without-decoder", "detection-only", "mean-pool", "mean-pool-descriptors",
        "token-descriptors",
    ],
)
def test_model_variants_keep_every_output(kwargs):
    # Prepare
    model = tiny_model(**kwargs)
    spec = build_spec(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = images()
    before = outputs(model, state, x)

    perms = random_permutations(spec, torch.Generator().manual_seed(8))

    # Execute
    after = outputs(model, apply_permutations(state, spec, perms), x)

    # Assert
    assert max(float((before[t] - after[t]).abs().max()) for t in before) <= 1e-10


def _one_group(spec, group: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    perms = random_permutations(spec, generator)
    tie = spec.tie_of.get(group)
    return {g: perms[g] for g in (tie.groups if tie else (group,))}


@pytest.mark.parametrize(
    "group",
    [
        "encoder.residual",
        "encoder.blocks.0.mlp",
        "encoder.blocks.1.attn.qk",
        "heads.segmentation.decoder.ups.stride2.conv_block.out",
        "heads.segmentation.pyramid.skips.stride2.blocks.0.0",
        "heads.detection.tower.hidden",
    ],
)
def test_each_group_alone_keeps_every_output(group):
    # Prepare
    model = tiny_model()
    spec = build_spec(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = images()
    perms = _one_group(spec, group, torch.Generator().manual_seed(7))

    # Execute
    after = outputs(model, apply_permutations(state, spec, perms), x)

    # Assert
    before = outputs(model, state, x)
    assert max(float((before[t] - after[t]).abs().max()) for t in before) <= 1e-10


def _rows(tensor: torch.Tensor, start: int, index: torch.Tensor) -> torch.Tensor:
    out = tensor.clone()
    out[start : start + index.numel()] = tensor[start + index]
    return out


def _break_q_k_across_heads(state, d, heads):
    # One free d-permutation of q and k rows jointly: coordinates leave their head.
    perm = torch.randperm(d, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(perm.view(heads, -1) // (d // heads), torch.arange(heads)[:, None].expand(heads, d // heads))
    for key in ("encoder.blocks.0.attn.qkv.weight", "encoder.blocks.0.attn.qkv.bias"):
        state[key] = _rows(_rows(state[key], 0, perm), d, perm)


def _valid_within_head(d, heads, seed):
    generator = torch.Generator().manual_seed(seed)
    within = torch.stack([torch.randperm(d // heads, generator=generator) for _ in range(heads)])
    return block_permutation(torch.arange(heads), within)


def _break_q_without_k(state, d, heads):
    perm = _valid_within_head(d, heads, 2)
    for key in ("encoder.blocks.0.attn.qkv.weight", "encoder.blocks.0.attn.qkv.bias"):
        state[key] = _rows(state[key], 0, perm)


def _break_v_without_projection(state, d, heads):
    perm = _valid_within_head(d, heads, 3)
    for key in ("encoder.blocks.0.attn.qkv.weight", "encoder.blocks.0.attn.qkv.bias"):
        state[key] = _rows(state[key], 2 * d, perm)



@pytest.mark.parametrize(
    "breaker",
    [_break_q_k_across_heads, _break_q_without_k, _break_v_without_projection],
    ids=["free-qk-perm-across-heads", "q-without-k", "v-without-projection"],
)
def test_invalid_attention_permutations_change_the_outputs(breaker):
    # Prepare
    model = tiny_model(embed_dim=32, num_heads=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = images()
    before = outputs(model, state, x)

    # Execute
    breaker(state, 32, 4)
    after = outputs(model, state, x)

    # Assert
    assert max_relative_change(before, after) > 1e-3


def test_residual_permutation_with_layer_norm_left_unpermuted_changes_the_outputs():
    # Prepare
    model = tiny_model()
    spec = build_spec(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = images()
    before = outputs(model, state, x)
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(4))

    # Execute
    permuted = apply_permutations(state, spec, {"encoder.residual": perm})
    for key in ("encoder.blocks.0.norm1.weight", "encoder.blocks.0.norm1.bias"):
        permuted[key] = state[key]
    after = outputs(model, permuted, x)

    # Assert
    assert max_relative_change(before, after) > 1e-3


def test_head_permutation_with_interleaved_qkv_layout_changes_the_outputs():
    # The fused rows are [q | k | v] (MONAI SABlock "(qkv l d)"); moving heads as if rows were "(l qkv d)"
    # must break the function, so the symmetry tests above really check the layout.
    # Prepare
    model = tiny_model(embed_dim=32, num_heads=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = images()
    before = outputs(model, state, x)
    head_perm = torch.tensor([1, 0, 3, 2])
    rows = (head_perm[:, None] * 24 + torch.arange(24)).reshape(-1)  # heads as blocks of 3 * d_h rows

    # Execute
    for key in ("encoder.blocks.0.attn.qkv.weight", "encoder.blocks.0.attn.qkv.bias"):
        state[key] = state[key][rows]
    cols = (head_perm[:, None] * 8 + torch.arange(8)).reshape(-1)
    state["encoder.blocks.0.attn.out_proj.weight"] = state["encoder.blocks.0.attn.out_proj.weight"][:, cols]
    after = outputs(model, state, x)

    # Assert
    assert max_relative_change(before, after) > 1e-3
