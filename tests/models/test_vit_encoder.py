import pytest
import torch

from mtmedformer.models.vit_encoder import EncoderBlock, ViTEncoder, evenly_spaced_blocks, resize_pos_embed


def _encoder(**kwargs) -> ViTEncoder:
    torch.manual_seed(0)
    values = {"image_size": 64, "patch_size": 16, "embed_dim": 24, "depth": 2, "num_heads": 3, "hidden_blocks": (1, 2)}
    values.update(kwargs)
    return ViTEncoder(**values).eval()


@pytest.mark.parametrize(
    ("depth", "count", "expected"),
    [(12, 3, (3, 6, 9)), (12, 2, (4, 8)), (4, 3, (1, 2, 3)), (2, 3, (1, 1, 1)), (12, 0, ())],
)
def test_evenly_spaced_blocks_match_unetr(depth, count, expected):
    assert evenly_spaced_blocks(depth, count) == expected


@pytest.mark.parametrize(("size", "patch"), [(64, 16), (64, 8), (96, 32), (48, 16)])
def test_forward_features_shapes(size, patch):
    # Prepare
    encoder = _encoder(image_size=size, patch_size=patch)
    image = torch.rand(2, 1, size, size)

    # Execute
    out = encoder.forward_features(image)

    # Assert
    grid = size // patch
    assert out.grid == (grid, grid)
    assert out.tokens.shape == (2, 1 + grid * grid, 24)
    assert [h.shape for h in out.hidden_states] == [(2, 1 + grid * grid, 24)] * 2


def test_resize_pos_embed_is_identity_at_the_same_grid():
    # Prepare
    pos = torch.randn(1, 1 + 4 * 5, 8)

    # Execute
    same = resize_pos_embed(pos, (4, 5), (4, 5))

    # Assert
    torch.testing.assert_close(same, pos, rtol=0, atol=1e-6)


def test_resize_pos_embed_keeps_the_class_position_and_changes_the_grid():
    # Prepare
    pos = torch.randn(1, 1 + 4 * 4, 8)

    # Execute
    resized = resize_pos_embed(pos, (4, 4), (6, 3))

    # Assert
    assert resized.shape == (1, 1 + 6 * 3, 8)
    torch.testing.assert_close(resized[:, 0], pos[:, 0])


def test_resize_pos_embed_rejects_a_wrong_token_count():
    with pytest.raises(ValueError, match="17 tokens, expected 1 \\+ 3\\*3"):
        resize_pos_embed(torch.zeros(1, 17, 8), (3, 3), (4, 4))


def test_other_input_size_uses_the_interpolated_position_embedding():
    # Prepare
    encoder = _encoder()
    image = torch.rand(1, 1, 96, 80)

    # Execute
    out = encoder.forward_features(image)

    # Assert
    assert out.grid == (6, 5)
    assert out.tokens.shape == (1, 1 + 30, 24)
    assert torch.isfinite(out.tokens).all()


def test_native_size_equals_the_interpolation_path():
    # Prepare
    encoder = _encoder()
    image = torch.rand(2, 1, 64, 64)
    native = encoder(image)

    # Execute: force the interpolation code path at the native grid
    encoder.position_embedding = lambda grid: resize_pos_embed(encoder.pos_embed, encoder.grid, grid)
    interpolated = encoder(image)

    # Assert
    torch.testing.assert_close(interpolated, native, rtol=0, atol=1e-6)


def _permute_heads(block: EncoderBlock, order: torch.Tensor, embed_dim: int, num_heads: int) -> None:
    # Move whole heads: the q, k and v row blocks of attn.qkv and the column blocks of attn.out_proj.
    head_dim = embed_dim // num_heads
    rows = torch.cat([order_h * head_dim + torch.arange(head_dim) for order_h in order])  # (d,)
    qkv_rows = torch.cat([s * embed_dim + rows for s in range(3)])  # (3d,)
    with torch.no_grad():
        block.attn.qkv.weight.copy_(block.attn.qkv.weight[qkv_rows])
        block.attn.qkv.bias.copy_(block.attn.qkv.bias[qkv_rows])
        block.attn.out_proj.weight.copy_(block.attn.out_proj.weight[:, rows])


def test_documented_qkv_layout_permuting_whole_heads_keeps_the_output():
    # Prepare
    encoder = _encoder()
    image = torch.rand(2, 1, 64, 64)
    before = encoder(image)

    # Execute
    _permute_heads(encoder.blocks[0], torch.tensor([2, 0, 1]), embed_dim=24, num_heads=3)
    after = encoder(image)

    # Assert
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_permuting_q_rows_alone_changes_the_output():
    # Prepare
    encoder = _encoder()
    image = torch.rand(2, 1, 64, 64)
    before = encoder(image)

    # Execute: swap two q rows inside head 0 without moving the matching k rows
    with torch.no_grad():
        weight = encoder.blocks[0].attn.qkv.weight
        weight[[0, 1]] = weight[[1, 0]]
    after = encoder(image)

    # Assert
    assert not torch.allclose(after, before, atol=1e-5)


def test_attention_dropout_is_active_in_training_only():
    # Prepare
    encoder = _encoder(attn_dropout=0.5)
    image = torch.rand(1, 1, 64, 64)

    # Execute
    eval_a, eval_b = encoder(image), encoder(image)
    encoder.train()
    train_a, train_b = encoder(image), encoder(image)

    # Assert
    torch.testing.assert_close(eval_a, eval_b)
    assert not torch.allclose(train_a, train_b)
    assert encoder.blocks[0].attn.dropout_rate == 0.5


def test_state_dict_holds_only_used_parameters():
    # Prepare
    encoder = _encoder()

    # Execute
    keys = set(encoder.state_dict())

    # Assert
    assert not any("norm_cross_attn" in k or "cross_attn" in k for k in keys)
    assert {"cls_token", "pos_embed", "patch_embed.weight", "norm.weight", "blocks.1.attn.qkv.weight"} <= keys


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 60}, "image_size 60 is not a multiple of patch_size 16"),
        ({"embed_dim": 25}, "embed_dim 25 is not a multiple of num_heads 3"),
        ({"depth": 0}, "depth must be >= 1, got 0"),
        ({"hidden_blocks": (3,)}, "bad: \\[3\\]"),
        ({"dropout": 1.0}, "dropout must be in \\[0, 1\\), got 1.0"),
        ({"mlp_ratio": -1.0}, "mlp_ratio must be > 0, got -1.0"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _encoder(**kwargs)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 3, 64, 64), "grayscale batch \\(B, 1, H, W\\), got shape \\(1, 3, 64, 64\\)"),
        ((1, 1, 64, 60), "image size 64x60 is not a multiple of the patch size 16"),
    ],
)
def test_bad_input_shapes(shape, message):
    with pytest.raises(ValueError, match=message):
        _encoder()(torch.rand(*shape))
