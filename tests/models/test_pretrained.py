"""Pretrained ViT checkpoints (timm, Hugging Face) loaded into the encoder reproduce the source model's features.

Nothing is downloaded: timm and Hugging Face models are built locally (random, seeded weights, perturbed so
every bias and LayerNorm differs from its default), saved, loaded through ``model.pretrained``'s path, and the
encoder's tokens on a grey image are compared with the source model's own forward pass on that image
replicated to three channels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtmedformer.compat import import_torchvision
from mtmedformer.errors import ConfigError
from mtmedformer.models.presets import PRESETS
from mtmedformer.models.pretrained import load_pretrained_encoder, read_state_dict
from mtmedformer.models.vit_encoder import ViTEncoder

import_torchvision()  # timm imports torchvision; its compiled ops cannot load next to the CPU torch wheel
timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

TIMM_NAMES = {"tiny": "vit_tiny_patch16_224", "small": "vit_small_patch16_224", "base": "vit_base_patch16_224"}
DEPTH = 2  # blocks, for speed; the mapping is per block


def _perturb(model: torch.nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))


def _timm_vit(preset: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(TIMM_NAMES[preset], pretrained=False, depth=DEPTH, dynamic_img_size=True, **kwargs)
    _perturb(model)
    return model.eval()


def _encoder(preset: str, image_size: int = 224, depth: int = DEPTH) -> ViTEncoder:
    dims = PRESETS[preset]
    return ViTEncoder(image_size, 16, dims.embed_dim, depth, dims.num_heads).eval()


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}
    if path.suffix == ".safetensors":
        safetensors_torch.save_file(state, str(path))
    else:
        torch.save({"model": state, "epoch": 3}, path)  # a training checkpoint wrapping the state dict
    return path


def _grey(size: int) -> torch.Tensor:
    return torch.randn(2, 1, size, size, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize(
    ("preset", "suffix", "image_size", "input_size"),
    [
        ("tiny", ".safetensors", 224, 224),
        ("tiny", ".pt", 224, 224),
        ("small", ".safetensors", 224, 224),
        ("base", ".pt", 224, 224),
        ("tiny", ".safetensors", 128, 128),  # position embedding resampled at load, as timm does at 128 px input
        ("small", ".pt", 320, 320),  # ... and enlarged
    ],
)
def test_timm_features_equal(tmp_path: Path, preset: str, suffix: str, image_size: int, input_size: int) -> None:
    # Prepare
    source = _timm_vit(preset)
    path = _save(source.state_dict(), tmp_path / f"vit{suffix}")
    encoder = _encoder(preset, image_size)
    image = _grey(input_size)

    # Execute
    report = load_pretrained_encoder(encoder, path)
    with torch.no_grad():
        ours = encoder.forward_features(image).tokens
        theirs = source.forward_features(image.expand(-1, 3, -1, -1))

    # Assert
    torch.testing.assert_close(ours, theirs, atol=3e-5, rtol=1e-5)
    assert report.naming == "timm" and not report.fresh
    assert any(r.startswith("patch_embed.weight: 3 colour channels summed") for r in report.reshaped)
    assert any(r.startswith("pos_embed") for r in report.reshaped) == (image_size != 224)
    assert {"head.weight", "head.bias"} <= set(report.ignored)


def test_runtime_resize_vs_timm_dynamic_size(tmp_path: Path) -> None:
    # Loaded at the training grid, run on a larger image: the encoder resizes its position embedding with plain
    # bicubic interpolation (cubic coefficient -0.75), timm's dynamic size with antialiased bicubic (PyTorch's
    # antialias kernel uses -0.5 even when enlarging). The embeddings then differ slightly, so the features
    # agree closely but not to float32 rounding.
    source = _timm_vit("tiny")
    encoder = _encoder("tiny", 224)
    load_pretrained_encoder(encoder, _save(source.state_dict(), tmp_path / "vit.safetensors"))
    image = _grey(288)

    with torch.no_grad():
        ours = encoder.forward_features(image).tokens
        theirs = source.forward_features(image.expand(-1, 3, -1, -1))

    difference = (ours - theirs).abs().max().item()
    assert 1e-6 < difference < 5e-2


@pytest.mark.parametrize("wrapper", ["", "vit."])
def test_huggingface_features_equal(tmp_path: Path, wrapper: str) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        hidden_size=192, num_hidden_layers=DEPTH, num_attention_heads=3, intermediate_size=768, image_size=224,
        patch_size=16, num_channels=3, qkv_bias=True, layer_norm_eps=1e-6,
    )  # fmt: skip
    source = transformers.ViTModel(config, add_pooling_layer=True).eval()
    _perturb(source)
    if wrapper:  # ViTForImageClassification's file: every encoder key under "vit.", plus a classifier
        source.save_pretrained(tmp_path / "hf")
        state = {wrapper + k: v for k, v in read_state_dict(tmp_path / "hf" / "model.safetensors").items()}
        path = _save({**state, "classifier.weight": torch.zeros(2, 192)}, tmp_path / "hf.pt")
    else:  # save_pretrained writes the hub naming (encoder.layer.N.attention.attention.query...)
        source.save_pretrained(tmp_path / "hf")
        path = tmp_path / "hf" / "model.safetensors"
    encoder = _encoder("tiny", 224)
    image = _grey(224)

    report = load_pretrained_encoder(encoder, path)
    with torch.no_grad():
        ours = encoder.forward_features(image).tokens
        theirs = source(pixel_values=image.expand(-1, 3, -1, -1)).last_hidden_state

    torch.testing.assert_close(ours, theirs, atol=3e-5, rtol=1e-5)
    assert report.naming == "huggingface" and not report.fresh
    assert any(k.startswith("pooler.") for k in report.ignored)


def _bad_file(tmp_path: Path, case: str) -> Path:
    if case == "missing":
        return tmp_path / "nope.pt"
    if case == "suffix":
        (tmp_path / "vit.ckpt").write_bytes(b"x")
        return tmp_path / "vit.ckpt"
    if case == "garbage":
        (tmp_path / "vit.pt").write_bytes(b"not a checkpoint")
        return tmp_path / "vit.pt"
    if case == "not_vit":
        return _save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "resnet.safetensors")
    if case == "width":
        return _save(_timm_vit("small").state_dict(), tmp_path / "small.safetensors")
    if case == "depth":
        return _save(_timm_vit("tiny").state_dict(), tmp_path / "tiny.safetensors")
    if case == "patch":
        torch.manual_seed(0)
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=DEPTH, patch_size=8)
        return _save(model.state_dict(), tmp_path / "p8.safetensors")
    model = _timm_vit("tiny", init_values=1e-5)  # LayerScale
    return _save(model.state_dict(), tmp_path / "ls.safetensors")


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing", "does not exist"),
        ("suffix", r"not a checkpoint file; use one of \.safetensors"),
        ("garbage", "cannot read .*re-download it"),
        ("not_vit", "not a ViT state dict"),
        ("width", "384 wide but model.preset gives 192"),
        ("depth", "has 2 transformer blocks but the encoder 3; set model.depth to 2"),
        ("patch", "set model.patch_size to 8"),
        ("layerscale", r"parts this ViT encoder does not have \(blocks\.0\.ls1\.gamma"),
    ],
)
def test_bad_checkpoints_fail_clearly(tmp_path: Path, case: str, match: str) -> None:
    encoder = _encoder("tiny", 224, depth=3 if case == "depth" else DEPTH)

    with pytest.raises(ConfigError, match=rf"model\.pretrained: .*{match}"):
        load_pretrained_encoder(encoder, _bad_file(tmp_path, case))


class _AnnotatedSet:
    """Stands in for a training set: only its task counts are read before the model is built."""

    def task_counts(self) -> dict[str, int]:
        return {"classification": 1, "segmentation": 1, "detection": 1}


def test_config_loads_checkpoint_for_training_only(tmp_path: Path) -> None:
    # Prepare
    from mtmedformer.config import load_config
    from mtmedformer.engine.setup import build_model_and_loss, build_training_objects

    source = _timm_vit("tiny")
    path = _save(source.state_dict(), tmp_path / "vit.safetensors")
    overrides = [f"model.pretrained={path}", f"model.depth={DEPTH}", "data.image_size=64"]

    # Execute
    trained = build_training_objects(load_config(None, overrides), _AnnotatedSet()).model
    rebuilt = build_model_and_loss(load_config(None, [*overrides[:-1], "model.pretrained=/gone.pt", overrides[-1]]))

    # Assert: training starts from the checkpoint; rebuilding (evaluation, federated sites) reads no file but
    # keeps the checkpoint's LayerNorm epsilon.
    torch.testing.assert_close(trained.encoder.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert trained.encoder.pos_embed.shape == (1, 1 + 4 * 4, 192)
    assert {m.eps for m in rebuilt.model.encoder.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}


def test_pretrained_needs_the_vit() -> None:
    from mtmedformer.config import load_config

    with pytest.raises(ConfigError, match=r"model\.pretrained.*set arch: vit"):
        load_config(None, ["model.arch=cnn", "model.pretrained=vit.pt"])


def test_a_training_checkpoint_starts_another_run(tmp_path: Path) -> None:
    # best.pt of a run on one data set is a pretrained start for another (the encoder part; heads ignored).
    from mtmedformer.config import load_config
    from mtmedformer.engine.checkpoint import save_checkpoint
    from mtmedformer.engine.setup import build_model_and_loss

    cfg = load_config(None, ["model.depth=1", "data.image_size=64"])
    trained = build_model_and_loss(cfg).model
    _perturb(trained.encoder)
    save_checkpoint(tmp_path / "best.pt", config=cfg, model=trained, epoch=3)
    encoder = build_model_and_loss(cfg).model.encoder

    report = load_pretrained_encoder(encoder, tmp_path / "best.pt")

    torch.testing.assert_close(encoder.state_dict(), trained.encoder.state_dict())
    assert not report.fresh and not report.reshaped
    assert any(name.startswith("heads.") for name in report.ignored)
