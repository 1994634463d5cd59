"""Models built with the hidden widths of a grown state dict (neuron matching with growth)."""

import re

import pytest
import torch
from monai.networks.blocks import MLPBlock, UnetBasicBlock, UnetResBlock

from mtmedformer.models import build_model, build_model_for_state, fit_widths
from tests.models.conftest import IMAGE_SIZE, NUM_CLASSES, tiny_config


def _grow(model, extra: int, fill: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """``model``'s state with ``extra`` more hidden units in every MLP and conv block.

    New units get random incoming parameters; their outgoing weights (linear2 columns, conv2 input channels)
    are ``fill`` times random values, so ``fill=0`` leaves the function unchanged.
    """
    generator = torch.Generator().manual_seed(seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def cat(key, axis, scale=1.0):
        value = state[key]
        shape = list(value.shape)
        shape[axis] = extra
        new = torch.randn(shape, generator=generator, dtype=value.dtype) * scale
        if key.endswith("running_var"):
            new = new.abs() + 0.5
        state[key] = torch.cat([value, new], dim=axis)

    for name, module in model.named_modules():
        if isinstance(module, MLPBlock):
            cat(f"{name}.linear1.weight", 0)
            cat(f"{name}.linear1.bias", 0)
            cat(f"{name}.linear2.weight", 1, fill)
        elif isinstance(module, UnetResBlock | UnetBasicBlock):
            for key in [k for k in state if k.startswith(f"{name}.conv1.") or k.startswith(f"{name}.norm1.")]:
                if state[key].ndim >= 1:
                    cat(key, 0)
            cat(f"{name}.conv2.conv.weight", 1, fill)
    return state


def _outputs(model, x):
    model.eval()
    with torch.no_grad():
        raw = model(x)
    return {t: torch.cat([p.flatten() for p in (v.values() if isinstance(v, dict) else [v])]) for t, v in raw.items()}


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_a_grown_state_builds_and_runs_every_task(norm):
    # Prepare
    cfg = tiny_config(decoder_norm=norm)
    torch.manual_seed(0)
    model = build_model(cfg, IMAGE_SIZE, NUM_CLASSES).eval()
    grown = _grow(model, extra=3, fill=0.0)
    x = torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    # Execute
    wide = build_model_for_state(cfg, IMAGE_SIZE, NUM_CLASSES, grown).eval()
    # Assert: parameter names unchanged, widths from the state, and units with zero outgoing weights change nothing
    assert set(wide.state_dict()) == set(grown)
    assert all(wide.state_dict()[k].shape == v.shape for k, v in grown.items())
    want, got = _outputs(model, x), _outputs(wide, x)
    assert set(got) == set(cfg.tasks)
    assert all(torch.allclose(got[t], want[t], atol=1e-5) for t in cfg.tasks)


def test_grown_units_with_outgoing_weights_change_the_output():
    # Prepare
    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_model(cfg, IMAGE_SIZE, NUM_CLASSES).eval()
    grown = _grow(model, extra=2, fill=1.0)
    x = torch.rand(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    # Execute
    wide = build_model_for_state(cfg, IMAGE_SIZE, NUM_CLASSES, grown)
    # Assert: the new units take part in the forward pass
    assert not torch.allclose(_outputs(wide, x)["classification"], _outputs(model, x)["classification"])


def test_configured_widths_change_nothing_and_a_missing_key_is_named():
    cfg = tiny_config()
    model = build_model(cfg, IMAGE_SIZE, NUM_CLASSES)
    state = model.state_dict()
    assert fit_widths(model, state) == {}
    del state["encoder.blocks.0.mlp.linear1.weight"]
    with pytest.raises(ValueError, match=re.escape("encoder.blocks.0.mlp.linear1.weight")):
        fit_widths(model, state)
