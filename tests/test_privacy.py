"""The site's DP mechanism (mtmedformer/privacy.py) on hand-made states."""

import math

import pytest
import torch

from mtmedformer.privacy import clip_and_noise


def _states(update_scale: float):
    reference = {"w": torch.zeros(3, 4), "b": torch.ones(4), "steps": torch.tensor(7, dtype=torch.int64)}
    local = {
        "w": reference["w"] + update_scale * torch.arange(12.0).reshape(3, 4),
        "b": reference["b"] + update_scale,
        "steps": torch.tensor(9, dtype=torch.int64),
    }
    return local, reference


def _update_norm(state, reference):
    return math.sqrt(sum(float((state[k].double() - reference[k].double()).square().sum()) for k in ("w", "b")))


def test_a_large_update_is_scaled_to_the_clip_norm_over_all_float_tensors():
    # Prepare: update norm sqrt(sum_{i<12} i^2 + 4) = sqrt(510)
    local, reference = _states(1.0)
    # Execute
    out = clip_and_noise(local, reference, clip_norm=2.0, noise_multiplier=0.0)
    # Assert
    assert out.norm == pytest.approx(math.sqrt(510))
    assert out.scale == pytest.approx(2.0 / math.sqrt(510))
    assert _update_norm(out.state, reference) == pytest.approx(2.0, rel=1e-6)
    # the direction is kept: every coordinate of the update is scaled by the same factor
    torch.testing.assert_close(out.state["w"], local["w"] * out.scale)
    assert out.state["steps"].item() == 9 and out.state["steps"].dtype == torch.int64  # integers: unchanged


def test_a_small_update_is_not_changed_without_noise():
    local, reference = _states(1e-3)
    out = clip_and_noise(local, reference, clip_norm=1.0, noise_multiplier=0.0)
    assert out.scale == 1.0
    for key in local:
        torch.testing.assert_close(out.state[key], local[key])


def test_noise_has_std_noise_multiplier_times_clip_norm_and_is_not_reproducible():
    # Prepare: a zero update of 200k coordinates
    reference = {"w": torch.zeros(200_000)}
    local = {"w": torch.zeros(200_000)}
    # Execute
    first = clip_and_noise(local, reference, clip_norm=2.0, noise_multiplier=0.5).state["w"]
    second = clip_and_noise(local, reference, clip_norm=2.0, noise_multiplier=0.5).state["w"]
    # Assert: std 0.5 * 2 = 1 (sampling error of the std ~ 1 / sqrt(2 n) = 0.0016)
    assert float(first.std()) == pytest.approx(1.0, abs=0.01)
    assert abs(float(first.mean())) < 0.01
    assert not torch.equal(first, second)  # drawn from the OS entropy pool, not from a seed the server knows


def test_a_given_generator_makes_the_noise_reproducible():
    local, reference = _states(1.0)
    runs = [clip_and_noise(local, reference, 1.0, 1.0, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    torch.testing.assert_close(runs[0].state["w"], runs[1].state["w"])


@pytest.mark.parametrize(
    ("local", "clip", "noise", "match"),
    [
        ({"w": torch.zeros(2)}, 1.0, 1.0, "different tensor names"),
        ({"w": torch.zeros(3), "b": torch.zeros(4), "steps": torch.tensor(1)}, 1.0, 1.0, "shape"),
        (None, 0.0, 1.0, "clip_norm must be > 0"),
        (None, 1.0, float("nan"), "noise_multiplier >= 0"),
    ],
)
def test_bad_arguments_are_refused(local, clip, noise, match):
    default_local, reference = _states(1.0)
    with pytest.raises(ValueError, match=match):
        clip_and_noise(local or default_local, reference, clip, noise)
