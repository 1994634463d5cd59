"""Smoke tests of benchmarks/classification_signal.py on a minuscule synthetic set (no figures asserted)."""

import numpy as np
import pytest
import yaml

import benchmarks.classification_signal as cs
from mtmedformer.config import config_from_dict


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        f"""
data:
  image_size: 64
  synthetic: {{num_sites: 2, images_per_site: 16, image_size: 64, seed: 0, cache_dir: {tmp_path / 'cache'}}}
model: {{patch_size: 16, depth: 1, seg_feature_size: 4, detection: {{feature_size: 4}}}}
train: {{batch_size: 4, progress: false}}
"""
    )
    return path


def test_lesion_features_of_a_disc_are_finite_and_compact():
    # Prepare: a bright disc of radius 6 on a dark background
    y, x = np.mgrid[:32, :32]
    mask = (x - 16) ** 2 + (y - 16) ** 2 <= 36
    image = np.where(mask, 0.8, 0.2).astype(np.float32)
    # Execute
    features = cs.lesion_features(image, mask)
    # Assert: a disc is the most compact outline (perimeter^2 / area near 4 pi in pixel counts' terms)
    assert len(features) == len(cs.FEATURES) and all(np.isfinite(features))
    assert features[1] > 0.5  # contrast to the ring
    assert features[2] < 25  # far from an irregular outline


def test_signal_and_fit_probe_run_end_to_end(tiny_yaml, capsys):
    # Prepare
    cfg = config_from_dict(yaml.safe_load(tiny_yaml.read_text()))
    # Execute
    cs.signal(cfg)
    cs.fit_probe(cfg, "vit", ["model.depth=1", "model.input_norm=none"], str(tiny_yaml), [], images=4, epochs=1)
    # Assert
    out = capsys.readouterr().out
    assert "logistic regression on all features" in out and "training CE per epoch" in out


def test_signal_from_a_models_predicted_lesions(tiny_yaml, capsys):
    # Prepare: an untrained model; its near-uniform output still yields one largest component per image
    from mtmedformer.models import build_model

    cfg = config_from_dict(yaml.safe_load(tiny_yaml.read_text()))
    model = build_model(cfg.model, cfg.data.image_size, len(cfg.data.classes)).eval()
    # Execute
    cs.signal(cfg, model)
    # Assert
    out = capsys.readouterr().out
    assert "lesions from the model's predicted masks" in out
    assert "logistic regression on the model's LesionDescriptors" in out
    assert "fitted on the ground-truth lesions' descriptors" in out and "its linear layer alone" in out


def test_predicted_lesion_is_the_largest_component():
    probability = np.zeros((16, 16))
    probability[1:3, 1:3] = 0.9
    probability[8:13, 8:13] = 0.8
    mask = cs._predicted_lesion(probability)
    assert mask.sum() == 25 and mask[10, 10]
