"""Regression: clients a few steps away from a freshly built model must not be permuted.

A fresh model's class token and position embedding are tiny (mean square ~1e-12 for the class token), so a
scale-relative matching cost once weighted them ~1e8 times more than every other tensor: under label skew the
first round then permuted most residual units and scrambled the global model (found by the FL comparison).
"""

import torch

from mtmedformer.config import config_from_dict
from mtmedformer.models import build_model
from strategies.matching import ClientUpdate, build_spec, match_and_merge


def _fresh_model():
    cfg = config_from_dict(
        {
            "data": {"image_size": 32},
            "model": {
                "patch_size": 8,
                "depth": 1,
                "seg_feature_size": 4,
                "detection": {"feature_size": 4, "stride": 8},
            },
        }
    )
    torch.manual_seed(0)
    return build_model(cfg.model, 32, 2)


def test_small_absolute_updates_of_a_fresh_model_keep_identity_permutations():
    # Prepare: like a few SGD steps, every client moves every weight by ~1e-3 in absolute terms
    model = _fresh_model()
    base = {k: v.double() for k, v in model.state_dict().items()}
    clients = {}
    for j in range(3):
        g = torch.Generator().manual_seed(j)
        state = {
            k: (v + 1e-3 * torch.randn(v.shape, generator=g, dtype=v.dtype) if v.is_floating_point() else v)
            for k, v in base.items()
        }
        counts = dict.fromkeys(("classification", "segmentation", "detection"), 10 + j)
        clients[f"site-{j}"] = ClientUpdate(state, 10 + j, counts)
    # Execute
    result = match_and_merge(clients, build_spec(model), previous=base)
    # Assert: nothing moved, and the merge is the weighted average of the clients
    moved = {k: v for k, v in result.diagnostics.summary().items() if k.startswith("matching/moved/")}
    assert max(moved.values()) == 0.0, {k: v for k, v in moved.items() if v}
    total = sum(10 + j for j in range(3))
    for name, value in base.items():
        if value.is_floating_point():
            expected = sum((10 + j) * clients[f"site-{j}"].state[name] for j in range(3)) / total
            assert torch.allclose(result.state_dict[name].double(), expected, atol=1e-9), name
