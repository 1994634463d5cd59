import pytest
import torch
from torch import nn

from mtmedformer.config.loss import DetectionLossConfig, LossConfig, TaskWeights
from mtmedformer.losses import HybridLoss, SegmentationLoss
from tests.losses.helpers import FakeDetectionHead, make_batch

SIZE = 16
ALL_TASKS = ("classification", "segmentation", "detection")


class TinyModel(nn.Module):
    """Shared conv encoder with a segmentation decoder, a classifier and a fake detection head."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(1, 4, kernel_size=3, padding=1)
        self.seg_decoder = nn.Conv2d(4, 1, kernel_size=1)
        self.classifier = nn.Linear(4, 2)
        self.detector = FakeDetectionHead(4)

    def forward(self, image: torch.Tensor) -> dict:
        features = torch.relu(self.encoder(image))
        return {
            "classification": self.classifier(features.mean((2, 3))),
            "segmentation": self.seg_decoder(features),
            "detection": self.detector(features),
        }


def _masks(count: int) -> torch.Tensor:
    masks = torch.zeros(count, 1, SIZE, SIZE)
    masks[:, :, 4:10, 5:11] = 1.0
    return masks


@pytest.fixture
def model() -> TinyModel:
    torch.manual_seed(0)
    return TinyModel()


def _seg_grads(model: TinyModel, images: torch.Tensor, masks: torch.Tensor, has_mask: list[bool]):
    model.zero_grad()
    batch = make_batch(masks, [-1] * len(has_mask), has_mask)
    outputs = model(images)
    outputs["segmentation"].retain_grad()
    result = HybridLoss(LossConfig(), ("segmentation",))(outputs, batch)
    result.total.backward()
    params = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return result, outputs["segmentation"].grad, params


def test_sample_without_mask_gives_exactly_zero_gradient(model):
    # Prepare: sample 1 has no mask (its mask tensor holds garbage that must never be read)
    torch.manual_seed(1)
    images = torch.rand(3, 1, SIZE, SIZE)
    masks = _masks(3)
    masks[1] = 7.0
    # Execute
    with_sample, logits_grad, grads_with = _seg_grads(model, images, masks, [True, False, True])
    without, _, grads_without = _seg_grads(model, images[[0, 2]], masks[[0, 2]], [True, True])
    # Assert
    assert torch.equal(logits_grad[1], torch.zeros_like(logits_grad[1]))
    assert logits_grad[0].abs().sum() > 0
    assert with_sample.counts == {"segmentation": 2}
    torch.testing.assert_close(with_sample.total, without.total)
    assert set(grads_with) == {"encoder.weight", "encoder.bias", "seg_decoder.weight", "seg_decoder.bias"}
    for name, grad in grads_with.items():
        torch.testing.assert_close(grad, grads_without[name], rtol=1e-5, atol=1e-7)


def test_segmentation_term_is_mean_over_annotated_samples_only():
    # Prepare
    torch.manual_seed(2)
    logits = torch.randn(4, 1, SIZE, SIZE)
    masks = _masks(4)
    batch = make_batch(masks, [-1] * 4, [True, False, False, True])
    # Execute
    result = HybridLoss(LossConfig(), ("segmentation",))({"segmentation": logits}, batch)
    # Assert
    expected = SegmentationLoss()(logits[[0, 3]], masks[[0, 3]]).mean()
    torch.testing.assert_close(result.per_task["segmentation"], expected)
    torch.testing.assert_close(result.total, expected)


def test_annotated_negative_mask_is_learned():
    # Prepare: one annotated "no lesion" sample; predicting a lesion must cost, predicting nothing must not
    batch = make_batch(torch.zeros(1, 1, SIZE, SIZE), [-1], [True])
    lesion = torch.full((1, 1, SIZE, SIZE), -20.0)
    lesion[..., 4:10, 4:10] = 20.0
    lesion.requires_grad_(True)
    empty = torch.full((1, 1, SIZE, SIZE), -20.0)
    loss = HybridLoss(LossConfig(), ("segmentation",))
    # Execute
    with_lesion = loss({"segmentation": lesion}, batch)
    with_lesion.total.backward()
    with_nothing = loss({"segmentation": empty}, batch)
    # Assert
    assert with_lesion.counts == {"segmentation": 1}
    assert with_lesion.per_task["segmentation"].item() > 0.9
    assert lesion.grad[..., 4:10, 4:10].abs().sum() > 0
    assert with_nothing.per_task["segmentation"].item() < 1e-4


def test_batch_without_labels_has_finite_total_and_no_classification_term(model):
    # Prepare
    batch = make_batch(_masks(2), [-1, -1], [True, True])
    loss = HybridLoss(LossConfig(), ("classification", "segmentation"))
    # Execute
    result = loss(model(torch.rand(2, 1, SIZE, SIZE)), batch)
    result.total.backward()
    # Assert
    assert torch.isfinite(result.total)
    assert result.counts == {"classification": 0, "segmentation": 2}
    assert set(result.per_task) == {"segmentation"}
    assert model.classifier.weight.grad is None


def test_batch_without_any_annotation_gives_zero_total_that_can_backpropagate(model):
    # Prepare
    batch = make_batch(_masks(2), [-1, -1], [False, False])
    loss = HybridLoss(LossConfig(weighting="uncertainty"), ("classification", "segmentation"))
    # Execute
    result = loss(model(torch.rand(2, 1, SIZE, SIZE)), batch)
    result.total.backward()
    # Assert
    assert result.total.item() == 0.0
    assert result.per_task == {}
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is None for p in loss.parameters())


def test_fixed_weights_scale_terms_exactly(model):
    # Prepare
    weights = TaskWeights(classification=2.0, segmentation=0.25, detection=1.0)
    batch = make_batch(_masks(3), [0, 1, -1], [True, False, True])
    loss = HybridLoss(LossConfig(weights=weights), ("classification", "segmentation"))
    # Execute
    result = loss(model(torch.rand(3, 1, SIZE, SIZE)), batch)
    # Assert
    expected = 2.0 * result.per_task["classification"] + 0.25 * result.per_task["segmentation"]
    torch.testing.assert_close(result.total.detach(), expected)
    assert result.counts == {"classification": 2, "segmentation": 2}
    assert loss.effective_weights() == {"classification": 2.0, "segmentation": 0.25}


def test_uncertainty_weights_are_learnable_through_the_hybrid_loss(model):
    # Prepare
    batch = make_batch(_masks(2), [0, 1], [True, True])
    loss = HybridLoss(LossConfig(weighting="uncertainty"), ("classification", "segmentation"))
    optimiser = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.5)
    before = loss.effective_weights()
    # Execute
    loss(model(torch.rand(2, 1, SIZE, SIZE)), batch).total.backward()
    optimiser.step()
    # Assert
    assert len(list(loss.parameters())) == 2
    after = loss.effective_weights()
    assert all(after[t] != before[t] for t in ("classification", "segmentation"))


def test_detection_term_uses_annotated_samples_including_negatives(model):
    # Prepare: sample 0 has a lesion box, sample 1 is annotated with no box, sample 2 is not annotated
    boxes = [torch.tensor([[2.0, 2.0, 8.0, 8.0]]), torch.zeros(0, 4), torch.zeros(0, 4)]
    batch = make_batch(_masks(3), [-1, -1, -1], [False] * 3, boxes=boxes, has_boxes=[True, True, False])
    cfg = LossConfig(detection=DetectionLossConfig(loss_weight=0.5))
    loss = HybridLoss(cfg, ALL_TASKS, detection_loss=model.detector.loss)
    outputs = model(torch.rand(3, 1, SIZE, SIZE))
    outputs["detection"]["objectness"].retain_grad()
    # Execute
    result = loss(outputs, batch)
    result.total.backward()
    # Assert
    per_sample = model.detector.loss(outputs["detection"], boxes, (SIZE, SIZE)).detach()
    torch.testing.assert_close(result.per_task["detection"], 0.5 * per_sample[:2].mean())
    assert result.counts == {"classification": 0, "segmentation": 0, "detection": 2}
    grad = outputs["detection"]["objectness"].grad
    assert torch.equal(grad[2], torch.zeros_like(grad[2]))
    assert grad[1].abs().sum() > 0  # the annotated negative is learned


@pytest.mark.parametrize(
    ("tasks", "detection_loss", "match"),
    [
        ((), None, "non-empty list"),
        (("segmentation", "segmentation"), None, "distinct"),
        (("segmentaton",), None, "distinct tasks"),
        (("detection",), None, "no detection_loss"),
    ],
)
def test_bad_arguments_raise(tasks, detection_loss, match):
    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        HybridLoss(LossConfig(), tasks, detection_loss)


def test_missing_output_and_bad_detection_loss_shape_raise():
    # Prepare
    batch = make_batch(_masks(2), [0, 1], [True, True], has_boxes=[True, True])
    seg_loss = HybridLoss(LossConfig(), ("classification", "segmentation"))
    det_loss = HybridLoss(LossConfig(), ("detection",), detection_loss=lambda outputs, boxes, size: torch.zeros(()))
    # Execute / Assert
    with pytest.raises(ValueError, match=r"lack enabled tasks \['segmentation'\]"):
        seg_loss({"classification": torch.zeros(2, 2)}, batch)
    with pytest.raises(ValueError, match="batch size 2"):
        seg_loss({"classification": torch.zeros(3, 2), "segmentation": torch.zeros(2, 1, SIZE, SIZE)}, batch)
    with pytest.raises(ValueError, match=r"one value per sample, shape \(2,\)"):
        det_loss({"detection": {}}, batch)
