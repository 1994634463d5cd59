"""One contract over every architecture, ViT preset and task subset: shapes, finite values, backward, names."""

import itertools
import re

import pytest
import torch

from mtmedformer import TASKS
from mtmedformer.models import PRESETS, group_keys

TASK_SUBSETS = [combo for n in range(1, len(TASKS) + 1) for combo in itertools.combinations(TASKS, n)]
VARIANTS = [("vit", preset) for preset in PRESETS] + [("cnn", "tiny")]

VIT_ENCODER_KEY = re.compile(
    r"encoder\.(cls_token|pos_embed|patch_embed\.(weight|bias)|norm\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.out_proj|mlp\.linear1|mlp\.linear2)\.(weight|bias))"
)
CNN_ENCODER_KEY = re.compile(r"encoder\.(conv1\.weight|(bn1|layer[1-4]\.\d+\.\w+(\.\d+)?)\.\w+)")
HEAD_KEYS = {
    "classification": re.compile(r"heads\.classification\.fc\.(weight|bias)"),
    "segmentation": re.compile(r"heads\.segmentation\.(pyramid\.skips\.stride\d+|decoder\.ups\.stride\d+|out)\..+"),
    "detection": re.compile(
        r"heads\.detection\.(pyramid\.skips\.stride\d+\..+|decoder\.ups\.stride\d+\..+|tower\..+"
        r"|(cls_logits|bbox_reg|centerness)\.(weight|bias))"
    ),
}


@pytest.mark.parametrize("tasks", TASK_SUBSETS, ids="+".join)
@pytest.mark.parametrize(("arch", "preset"), VARIANTS, ids=lambda v: v)
def test_model_contract(make_model, arch, preset, tasks):
    # Prepare
    model = make_model(arch=arch, preset=preset, tasks=tasks)
    image = torch.rand(2, 1, 64, 64)
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 30.0]]), torch.zeros(0, 4)]

    # Execute
    outputs = model(image)
    losses = []
    if "classification" in tasks:
        losses.append(torch.nn.functional.cross_entropy(outputs["classification"], torch.tensor([0, 2])))
    if "segmentation" in tasks:
        losses.append(outputs["segmentation"].sigmoid().mean())
    if "detection" in tasks:
        losses.append(model.heads["detection"].loss(outputs["detection"], boxes, (64, 64)).mean())
    torch.stack(losses).sum().backward()

    # Assert: outputs
    assert model.tasks == tasks and tuple(outputs) == tasks and tuple(model.heads) == tasks
    if "classification" in tasks:
        assert outputs["classification"].shape == (2, 3)
    if "segmentation" in tasks:
        assert outputs["segmentation"].shape == (2, 1, 64, 64)
    if "detection" in tasks:
        assert {k: tuple(v.shape) for k, v in outputs["detection"].items()} == {
            "cls_logits": (2, 1, 16, 16),
            "ltrb": (2, 4, 16, 16),
            "centerness": (2, 1, 16, 16),
        }
    flat = [v for out in outputs.values() for v in (out.values() if isinstance(out, dict) else [out])]
    assert all(torch.isfinite(v).all() for v in flat)

    # Assert: every parameter gets a finite gradient
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []

    # Assert: names as documented, grouped by owner
    keys = list(model.state_dict())
    encoder_key = VIT_ENCODER_KEY if arch == "vit" else CNN_ENCODER_KEY
    groups = group_keys(keys)
    assert tuple(g for g in groups if g != "encoder") == tasks
    assert [k for k in groups["encoder"] if not encoder_key.fullmatch(k)] == []
    for task in tasks:
        assert [k for k in groups[task] if not HEAD_KEYS[task].fullmatch(k)] == []
