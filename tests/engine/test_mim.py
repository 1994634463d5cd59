"""SimMIM pre-training: block masks, patch order, the masked-patch loss, and a checkpoint model.pretrained loads."""

import pytest
import torch

from mtmedformer.cli import main
from mtmedformer.engine.mim import MimConfig, SimMIM, block_mask, patchify
from mtmedformer.engine.setup import build_training_objects
from mtmedformer.errors import ConfigError
from mtmedformer.models.pretrained import load_pretrained_encoder
from mtmedformer.models.vit_encoder import ViTEncoder


@pytest.mark.parametrize(("grid", "block", "ratio", "hidden_blocks"), [((8, 8), 2, 0.6, 10), ((4, 6), 2, 0.5, 3)])
def test_block_mask_hides_whole_blocks(grid, block, ratio, hidden_blocks) -> None:
    mask = block_mask(5, grid, block, ratio, torch.Generator().manual_seed(0))

    assert mask.shape == (5, *grid)
    assert (mask.sum(dim=(1, 2)) == hidden_blocks * block * block).all()
    blocks = mask.reshape(5, grid[0] // block, block, grid[1] // block, block)
    assert (blocks.all(dim=(2, 4)) == blocks.any(dim=(2, 4))).all()  # each block all hidden or all shown


def test_block_mask_must_tile_the_grid() -> None:
    with pytest.raises(ConfigError, match="does not tile the 6x6 patch grid"):
        block_mask(1, (6, 6), 4, 0.5, torch.Generator())


def test_patchify_follows_the_token_order() -> None:
    image = torch.arange(2 * 8 * 12, dtype=torch.float32).reshape(2, 1, 8, 12)

    patches = patchify(image, 4)  # (2, 6, 16): grid 2 x 3

    assert patches.shape == (2, 6, 16)
    torch.testing.assert_close(patches[1, 4].reshape(4, 4), image[1, 0, 4:8, 4:8])  # token 4 = row 1, column 1


def test_loss_reads_masked_patches_and_learns() -> None:
    torch.manual_seed(0)
    model = SimMIM(ViTEncoder(32, patch_size=8, embed_dim=32, depth=1, num_heads=2))
    image = torch.rand(4, 1, 32, 32)
    mask = block_mask(4, (4, 4), 2, 0.5, torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    first = model(image, mask).detach()
    for _ in range(40):
        optimizer.zero_grad()
        model(image, mask).backward()
        optimizer.step()

    with torch.no_grad():
        assert model(image, mask).item() < 0.7 * first.item()
    model.zero_grad()
    model(image, mask).backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0


def test_mim_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="--mask-ratio must be in"):
        MimConfig(mask_ratio=1.0)


def test_pretrain_command_writes_an_encoder_model_pretrained_loads(tmp_path, tiny_config) -> None:
    # Prepare
    cfg = tiny_config()
    out = tmp_path / "enc.pt"
    settings = [
        "--set", f"data.synthetic.cache_dir={cfg.data.synthetic.cache_dir}", "--set", "data.synthetic.num_sites=2",
        "--set", "data.synthetic.images_per_site=12", "--set", "data.synthetic.image_size=32",
        "--set", "data.image_size=32", "--set", "model.patch_size=8", "--set", "model.depth=1",
        "--set", "train.batch_size=4", "--set", "train.threads=1",
    ]  # fmt: skip

    # Execute
    assert main(["pretrain", *settings, "--out", str(out), "--minutes", "0.02", "--mask-block", "16"]) == 0
    pretrained = tiny_config(model={"pretrained": str(out)})
    model = build_training_objects(pretrained, _Annotated()).model
    report = load_pretrained_encoder(build_training_objects(tiny_config(), _Annotated()).model.encoder, out)

    # Assert
    saved = torch.load(out, weights_only=True)
    assert saved["kind"] == "mtmedformer-mim-encoder" and saved["steps"] >= 1
    torch.testing.assert_close(model.encoder.blocks[0].attn.qkv.weight, saved["encoder"]["blocks.0.attn.qkv.weight"])
    assert not report.reshaped and not report.fresh and not report.ignored


class _Annotated:
    def task_counts(self) -> dict[str, int]:
        return {"classification": 1, "segmentation": 1, "detection": 1}
