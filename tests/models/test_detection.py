import pytest
import torch
from monai.data.box_utils import box_iou

from mtmedformer.models.detection import CENTERNESS, CLS_LOGITS, LTRB
from mtmedformer.models.detection_targets import assign_targets, location_centers

SIZE, STRIDE = 64, 4
GRID = (SIZE // STRIDE, SIZE // STRIDE)


@pytest.fixture
def head(make_model):
    return make_model(tasks=("detection",)).heads["detection"]


def _perfect_outputs(boxes_list: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Outputs that a perfect detector would give: confident at positives, exact distances and centre-ness."""
    batch, locations = len(boxes_list), GRID[0] * GRID[1]
    centers = location_centers(GRID, STRIDE)
    cls = torch.full((batch, 1, *GRID), -30.0)
    ltrb = torch.full((batch, 4, *GRID), 1.0)
    ctr = torch.full((batch, 1, *GRID), -30.0)
    for i, boxes in enumerate(boxes_list):
        targets = assign_targets(boxes, GRID, STRIDE)
        pos = targets.positive
        cls[i].view(locations)[pos] = 30.0
        dist = torch.cat([centers[pos] - targets.boxes[pos, :2], targets.boxes[pos, 2:] - centers[pos]], dim=1)
        ltrb[i].view(4, locations)[:, pos] = dist.T
        ctr[i].view(locations)[pos] = torch.logit(targets.centerness[pos].clamp(1e-6, 1 - 1e-6))
    return {CLS_LOGITS: cls, LTRB: ltrb, CENTERNESS: ctr}


def test_location_centers_are_cell_centres_in_pixels():
    centers = location_centers((2, 3), 4)
    torch.testing.assert_close(
        centers, torch.tensor([[2.0, 2.0], [6.0, 2.0], [10.0, 2.0], [2.0, 6.0], [6.0, 6.0], [10.0, 6.0]])
    )


def test_no_boxes_give_no_positive_location():
    targets = assign_targets(torch.zeros(0, 4), GRID, STRIDE)
    assert targets.num_positive == 0 and targets.positive.shape == (GRID[0] * GRID[1],)


def test_positives_lie_inside_the_box_near_its_centre():
    # Prepare
    box = torch.tensor([[16.0, 16.0, 48.0, 48.0]])

    # Execute
    targets = assign_targets(box, GRID, STRIDE, center_radius=1.5)

    # Assert: radius 6 px around (32, 32) holds locations x, y in {30, 34}
    centers = location_centers(GRID, STRIDE)[targets.positive]
    assert targets.num_positive == 4
    assert set(centers[:, 0].tolist()) == {30.0, 34.0} and set(centers[:, 1].tolist()) == {30.0, 34.0}
    torch.testing.assert_close(targets.boxes[targets.positive], box.expand(4, 4))
    # FCOS centre-ness at (30, 30): sqrt(min(14, 18) / max(14, 18) * min(14, 18) / max(14, 18)) = 14 / 18
    torch.testing.assert_close(targets.centerness[targets.positive], torch.full((4,), 14.0 / 18.0))


def test_a_box_smaller_than_the_stride_still_gets_its_centre_cell():
    # Execute
    targets = assign_targets(torch.tensor([[9.0, 9.0, 10.0, 10.0]]), GRID, STRIDE)

    # Assert: the cell holding (9.5, 9.5) is row 2, column 2
    assert targets.positive.nonzero().flatten().tolist() == [2 * GRID[1] + 2]
    assert 0 < targets.centerness[2 * GRID[1] + 2] <= 1


def test_a_location_in_two_boxes_takes_the_smaller_one():
    # Prepare: a small box centred inside a large one
    large, small = [0.0, 0.0, 64.0, 64.0], [28.0, 28.0, 36.0, 36.0]

    # Execute
    targets = assign_targets(torch.tensor([large, small]), GRID, STRIDE)

    # Assert
    centers = location_centers(GRID, STRIDE)
    at_center = ((centers - 30.0).abs().sum(dim=1) == 0).nonzero().item()
    assert targets.positive[at_center]
    assert targets.boxes[at_center].tolist() == small


def test_zero_box_image_gets_a_finite_background_loss(head):
    # Prepare
    outputs = {
        CLS_LOGITS: torch.randn(1, 1, *GRID),
        LTRB: torch.rand(1, 4, *GRID) * 8,
        CENTERNESS: torch.randn(1, 1, *GRID),
    }

    # Execute
    terms = head.loss_terms(outputs, [torch.zeros(0, 4)], (SIZE, SIZE))

    # Assert
    assert torch.isfinite(terms["classification"]).all() and terms["classification"].item() > 0
    assert terms["box"].item() == 0 and terms["centerness"].item() == 0


def test_perfect_prediction_has_near_zero_focal_and_box_terms(head):
    # Prepare
    boxes = [torch.tensor([[8.0, 12.0, 30.0, 40.0], [40.0, 36.0, 60.0, 52.0]]), torch.zeros(0, 4)]
    perfect = _perfect_outputs(boxes)
    shifted = {k: v.clone() for k, v in perfect.items()}
    shifted[LTRB][0] += 3.0

    # Execute
    terms = head.loss_terms(perfect, boxes, (SIZE, SIZE))
    worse = head.loss(shifted, boxes, (SIZE, SIZE))

    # Assert
    assert terms["classification"].max().item() < 1e-6
    assert terms["box"].max().item() < 1e-5
    assert worse[0] > head.loss(perfect, boxes, (SIZE, SIZE))[0] + 0.1


def test_per_sample_loss_does_not_depend_on_other_samples(head):
    # Prepare
    torch.manual_seed(1)
    outputs = {
        CLS_LOGITS: torch.randn(2, 1, *GRID),
        LTRB: torch.rand(2, 4, *GRID) * 8,
        CENTERNESS: torch.randn(2, 1, *GRID),
    }
    boxes = [torch.tensor([[10.0, 10.0, 30.0, 26.0]]), torch.tensor([[0.0, 0.0, 64.0, 64.0], [5.0, 5.0, 9.0, 9.0]])]

    # Execute
    both = head.loss(outputs, boxes, (SIZE, SIZE))
    alone = head.loss({k: v[:1] for k, v in outputs.items()}, boxes[:1], (SIZE, SIZE))

    # Assert
    assert both.shape == (2,)
    torch.testing.assert_close(both[0], alone[0])


def test_loss_backpropagates_into_the_head(make_model):
    # Prepare
    model = make_model(tasks=("detection",))
    outputs = model(torch.rand(2, 1, SIZE, SIZE))["detection"]

    # Execute
    model.heads["detection"].loss(
        outputs, [torch.tensor([[4.0, 4.0, 20.0, 20.0]]), torch.zeros(0, 4)], (SIZE, SIZE)
    ).sum().backward()

    # Assert
    grads = [p.grad for p in model.heads["detection"].bbox_reg.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_decode_returns_pixel_boxes_and_nms_removes_duplicates(head):
    # Prepare: two neighbouring locations predict almost the same box, a third location a separate box
    cls = torch.full((1, 1, *GRID), -20.0)
    ltrb = torch.ones(1, 4, *GRID)
    ctr = torch.full((1, 1, *GRID), 20.0)
    cls[0, 0, 5, 5], cls[0, 0, 5, 6], cls[0, 0, 12, 12] = 5.0, 4.0, 3.0
    ltrb[0, :, 5, 5] = torch.tensor([10.0, 10.0, 10.0, 10.0])  # centre (22, 22) -> box (12, 12, 32, 32)
    ltrb[0, :, 5, 6] = torch.tensor([14.0, 10.0, 6.0, 10.0])  # centre (26, 22) -> box (12, 12, 32, 32)
    ltrb[0, :, 12, 12] = torch.tensor([4.0, 4.0, 4.0, 4.0])  # centre (50, 50) -> box (46, 46, 54, 54)

    # Execute
    (result,) = head.decode({CLS_LOGITS: cls, LTRB: ltrb, CENTERNESS: ctr}, (SIZE, SIZE))

    # Assert
    torch.testing.assert_close(result["boxes"], torch.tensor([[12.0, 12.0, 32.0, 32.0], [46.0, 46.0, 54.0, 54.0]]))
    assert result["scores"].shape == (2,) and result["scores"][0] > result["scores"][1]


def test_decode_of_a_perfect_prediction_recovers_the_boxes(head):
    # Prepare
    boxes = torch.tensor([[8.0, 12.0, 30.0, 40.0], [40.0, 36.0, 60.0, 52.0]])

    # Execute
    (result,) = head.decode(_perfect_outputs([boxes]), (SIZE, SIZE))

    # Assert
    assert result["boxes"].shape == (2, 4)
    assert box_iou(result["boxes"], boxes).max(dim=0).values.min() > 0.99


def test_decode_applies_threshold_and_detection_cap(make_model):
    # Prepare
    head = make_model(tasks=("detection",), detection={"max_detections": 3, "score_threshold": 0.5}).heads["detection"]
    cls = torch.full((1, 1, *GRID), -20.0)
    cls[0, 0, ::4, ::4] = 5.0  # 16 well separated confident locations
    outputs = {CLS_LOGITS: cls, LTRB: torch.ones(1, 4, *GRID), CENTERNESS: torch.full((1, 1, *GRID), 20.0)}

    # Execute
    (result,) = head.decode(outputs, (SIZE, SIZE))

    # Assert
    assert result["boxes"].shape == (3, 4) and (result["scores"] > 0.5).all()


def test_decode_without_confident_locations_returns_empty_tensors(head):
    outputs = {
        CLS_LOGITS: torch.full((2, 1, *GRID), -20.0),
        LTRB: torch.ones(2, 4, *GRID),
        CENTERNESS: torch.zeros(2, 1, *GRID),
    }
    results = head.decode(outputs, (SIZE, SIZE))
    assert [r["boxes"].shape for r in results] == [(0, 4), (0, 4)]
    assert [r["scores"].shape for r in results] == [(0,), (0,)]


@pytest.mark.parametrize(
    ("boxes", "image_size", "message"),
    [
        ([torch.zeros(0, 4)] * 2, (SIZE, SIZE), "got 2 box tensors for a batch of 1"),
        ([torch.zeros(1, 5)], (SIZE, SIZE), "boxes\\[0\\] must have shape \\(N, 4\\)"),
        ([torch.tensor([[10.0, 10.0, 5.0, 20.0]])], (SIZE, SIZE), "x2 < x1"),
        ([torch.tensor([[float("nan"), 0.0, 1.0, 1.0]])], (SIZE, SIZE), "NaN"),
        ([torch.zeros(0, 4)], (SIZE * 2, SIZE), "does not cover image_size 128x64"),
    ],
)
def test_bad_loss_inputs(head, boxes, image_size, message):
    outputs = {
        CLS_LOGITS: torch.zeros(1, 1, *GRID),
        LTRB: torch.ones(1, 4, *GRID),
        CENTERNESS: torch.zeros(1, 1, *GRID),
    }
    with pytest.raises(ValueError, match=message):
        head.loss(outputs, boxes, image_size)


def test_missing_output_keys_are_named(head):
    with pytest.raises(ValueError, match="lack \\['ltrb', 'centerness'\\]"):
        head.decode({CLS_LOGITS: torch.zeros(1, 1, *GRID)}, (SIZE, SIZE))


def test_head_overfits_one_image_box(make_model):
    # Prepare: a bright rectangle and its box; the whole tiny model trains on that single image
    model = make_model(tasks=("detection",))
    image = torch.zeros(1, 1, SIZE, SIZE)
    image[..., 24:44, 20:36] = 1.0
    box = torch.tensor([[20.0, 24.0, 36.0, 44.0]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    head = model.heads["detection"]

    # Execute
    for _ in range(40):
        loss = head.loss(model(image)["detection"], [box], (SIZE, SIZE)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    (result,) = head.decode(model(image)["detection"], (SIZE, SIZE))

    # Assert
    assert result["scores"][0] > 0.5
    assert box_iou(result["boxes"][:1], box).item() > 0.6
