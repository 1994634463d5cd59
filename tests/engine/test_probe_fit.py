"""Refitting the descriptor probe on a training pass: from the pass's own forward passes, labelled images only."""

import torch

from mtmedformer.data.batch import Batch
from mtmedformer.data.sources import load_records, make_datasets
from mtmedformer.engine.checkpoint import load_checkpoint
from mtmedformer.engine.loop import train_epoch
from mtmedformer.engine.probe import ProbeFitter
from mtmedformer.engine.setup import build_model_and_loss
from mtmedformer.engine.trainer import fit


def _batches(labelled: bool, n: int = 8, count: int = 3):
    generator = torch.Generator().manual_seed(0)
    return [
        Batch(
            image=torch.rand(n, 1, 32, 32, generator=generator),
            mask=torch.zeros(n, 1, 32, 32),
            boxes=[torch.zeros(0, 4) for _ in range(n)],
            label=(torch.arange(n) + i) % 2 if labelled else torch.full((n,), -1),
            has_label=torch.full((n,), labelled),
            has_mask=torch.ones(n, dtype=torch.bool),
            has_boxes=torch.ones(n, dtype=torch.bool),
        )
        for i in range(count)
    ]


def test_a_training_pass_refits_the_probe_and_removes_its_hooks(tiny_config):
    # Prepare
    objects = build_model_and_loss(tiny_config(model={"cls_descriptors": True}))
    model, head = objects.model, objects.model.heads["classification"]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # only the probe can change
    # Execute
    result = train_epoch(model, objects.loss_fn, _batches(labelled=True), optimizer)
    # Assert
    assert result.probe_loss is not None and result.probe_loss <= 0.7 + 1e-6
    assert float(head.probe.weight.abs().sum()) > 0 and float(head.probe.std.min()) > 0
    assert not head.descriptors._forward_hooks and not head.fc._forward_hooks
    probe_tensors = {id(t) for t in head.probe.buffers()}
    assert not any(id(p) in probe_tensors for group in optimizer.param_groups for p in group["params"])


def test_images_without_a_label_are_not_collected_and_the_probe_keeps_its_fit(tiny_config):
    # Prepare
    objects = build_model_and_loss(tiny_config(model={"cls_descriptors": True}))
    head = objects.model.heads["classification"]
    # Execute
    result = train_epoch(objects.model, objects.loss_fn, _batches(labelled=False),
                         torch.optim.SGD(objects.model.parameters(), lr=0.0))
    # Assert
    assert result.probe_loss is None
    assert torch.equal(head.probe.weight, torch.zeros_like(head.probe.weight))


def test_models_without_descriptors_have_no_fitter(tiny_config):
    assert ProbeFitter.for_model(build_model_and_loss(tiny_config()).model) is None


def test_centralized_training_records_the_probe_fit_and_checkpoints_it(tiny_config):
    # Prepare
    cfg = tiny_config(model={"cls_descriptors": True})
    sets = make_datasets(cfg.data, load_records(cfg.data), seed=cfg.train.seed)
    # Execute
    result = fit(cfg, sets["train"], sets["val"])
    # Assert
    assert all("train/classification/probe_loss" in row for row in result.history.rows)
    last = load_checkpoint(result.files["last"])
    assert float(last.model_state["heads.classification.probe.weight"].abs().sum()) > 0
