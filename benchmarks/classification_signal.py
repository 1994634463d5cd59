"""Is benign/malignant learnable from the synthetic mammograms, and how fast can each model fit it?

Two measurements on the synthetic set of ``--config`` (default: configs/centralized_mammography.yaml, 128 px):

1. ``signal``: hand-made lesion features computed from the *ground-truth* masks (edge sharpness, contrast to
   the surrounding ring, outline irregularity perimeter^2 / area, area, ring texture), each feature's test
   ROC-AUC and a logistic regression fitted on the train split and scored on the test split. This bounds what
   the images carry when the lesion is known; it is not a model of the project.
2. ``fit`` (with ``--fit``): how fast each architecture fits the labels at all: a classification-only model
   trained on ``--fit-images`` labelled training images (no augmentation, constant learning rate 5e-4, bf16
   autocast, batch 16, one thread; the ViT with depth 4, with and without per-image input standardization)
   for ``--fit-epochs`` epochs, printing the training cross-entropy per epoch (0.693 = chance for two
   balanced classes).

With ``--checkpoint <pt>`` measurement 1 uses the lesions that checkpoint's model *predicts* (largest
component of probability > 0.5, on the images as the model sees them) and also scores the model's own
``LesionDescriptors`` the same way: how much of the signal survives an imperfect segmentation. It also
scores a regression fitted on the ground-truth lesions' descriptors against the predicted ones (does a fit
on true outlines transfer?), and the checkpoint's own classifier and its linear layer alone (without the
descriptor probe).

Usage: python -m benchmarks.classification_signal [--config ...] [--set key=value ...] [--fit] [--checkpoint pt]
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from monai.metrics import compute_roc_auc
from scipy import ndimage
from torch.utils.data import Subset

from mtmedformer.config import load_config
from mtmedformer.data.image_io import read_image, read_mask
from mtmedformer.data.sources import load_records, make_datasets
from mtmedformer.engine.checkpoint import load_checkpoint, load_model_state
from mtmedformer.engine.loop import train_epoch
from mtmedformer.engine.optim import build_optimizer
from mtmedformer.engine.seeding import seed_everything
from mtmedformer.engine.setup import build_model_and_loss
from mtmedformer.engine.trainer import make_loader
from mtmedformer.logs import setup_logging
from mtmedformer.models import build_model
from mtmedformer.models.classification import LesionDescriptors
from mtmedformer.models.multitask import standardize_per_image

FEATURES = ("edge gradient", "contrast to ring", "perimeter^2/area", "area", "ring std", "ring gradient")


def lesion_features(image: np.ndarray, mask: np.ndarray) -> list[float]:
    """The :data:`FEATURES` of one lesion; ``image`` ``(H, W)`` in [0, 1], ``mask`` ``(H, W)`` bool."""
    gradient = np.hypot(*np.gradient(ndimage.gaussian_filter(image, 0.7)))
    edge = mask ^ ndimage.binary_erosion(mask)
    ring = ndimage.binary_dilation(mask, iterations=4) & ~mask
    return [
        float(gradient[edge].mean()),
        float(image[mask].mean() - image[ring].mean()),
        float(edge.sum() ** 2 / mask.sum()),
        float(mask.sum()),
        float(image[ring].std()),
        float(gradient[ring].mean()),
    ]


def _auc(score: torch.Tensor, target: torch.Tensor) -> float:
    return float(compute_roc_auc(score.float(), target.float()))


def _logistic(x: torch.Tensor, y: torch.Tensor):
    """Fit an L2-regularised logistic regression on standardized ``x``; return its scoring function."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias])

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits((x - mean) / std @ weight + bias, y)
        loss = loss + 1e-3 * weight.pow(2).sum()
        loss.backward()
        return loss

    for _ in range(20):
        optimizer.step(closure)
    return lambda z: ((z - mean) / std @ weight + bias).detach()


def _logistic_auc(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor) -> float:
    """Fit a logistic regression on the train rows of ``x``; its test AUC."""
    return _auc(_logistic(x[train], y[train])(x[~train]), y[~train])


def _predicted_lesion(probability: np.ndarray) -> np.ndarray:
    """The largest connected component of ``probability > 0.5`` (of >= half the maximum if none)."""
    mask = probability > 0.5
    if not mask.any():
        mask = probability >= 0.5 * probability.max()
    labels, count = ndimage.label(mask)
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    return labels == 1 + int(np.argmax(sizes))


def signal(cfg, model: torch.nn.Module | None = None) -> None:
    """Print per-feature test AUCs and a logistic regression's test AUC (see module docstring).

    With ``model`` (a trained MTMedFormer) the lesion is the model's predicted one instead of the ground truth,
    and the model's own :class:`~mtmedformer.models.classification.LesionDescriptors` are scored too, as is a
    fit on the ground-truth lesions' descriptors applied to the predicted ones, and the model's classifier.
    """
    rows, descriptors, gt_descriptors, margins, fc_margins, labels, splits = [], [], [], [], [], [], []
    sets = make_datasets(cfg.data, load_records(cfg.data), seed=cfg.train.seed)
    head = model.heads["classification"] if model is not None and "classification" in model.heads else None
    fc_out: list[torch.Tensor] = []
    hook = head.fc.register_forward_hook(lambda m, a, out: fc_out.append(out)) if head is not None else None
    for split in ("train", "test"):
        dataset = sets[split]
        for index, rec in enumerate(dataset.records):
            if rec.label is None or not rec.masks:
                continue
            described = None
            if model is None:
                image = read_image(rec.image)
                mask = np.zeros(image.shape, dtype=bool)
                for path in rec.masks:
                    mask |= read_mask(path, image.shape)
            else:  # the image as the model sees it (resized), the lesion it predicts
                item = dataset[index]
                tensor = item["image"][None]
                with torch.no_grad():
                    fc_out.clear()
                    outputs = model(tensor)
                    logits = outputs["segmentation"]
                    if model.config.input_norm == "image":
                        tensor = standardize_per_image(tensor)
                    described = LesionDescriptors()(tensor, logits)[0].tolist()
                    # the same descriptors of the ground-truth lesion (a mask as confident logits)
                    gt_logits = (item["mask"][None].float() * 2 - 1) * 20
                    gt_described = LesionDescriptors()(tensor, gt_logits)[0].tolist()
                if head is not None:  # logit margins (malignant - benign) of the whole classifier and of its fc
                    margin = float(outputs["classification"][0, 1] - outputs["classification"][0, 0])
                    fc_margin = float(fc_out[-1][0, 1] - fc_out[-1][0, 0])
                image = item["image"][0].numpy()
                mask = _predicted_lesion(torch.sigmoid(logits)[0, 0].numpy())
            image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
            if mask.sum() < 3:
                continue
            rows.append(lesion_features(image, mask))
            labels.append(rec.label == cfg.data.classes[1])
            splits.append(split)
            if described is not None:
                descriptors.append(described)
                gt_descriptors.append(gt_described)
            if head is not None:
                margins.append(margin)
                fc_margins.append(fc_margin)
    x = torch.tensor(rows, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.float32)
    train = torch.tensor([s == "train" for s in splits])
    source = "ground-truth masks" if model is None else "the model's predicted masks"
    print(f"lesions with a label: {len(y)} ({int(train.sum())} train, {int((~train).sum())} test), "
          f"{float(y.mean()):.2f} positive ({cfg.data.classes[1]}); lesions from {source}")
    for i, name in enumerate(FEATURES):
        print(f"  test AUC of {name:>18}: {_auc(x[~train, i], y[~train]):.3f}")
    print(f"logistic regression on all features (fit on train, {source}): test AUC {_logistic_auc(x, y, train):.3f}")
    if hook is not None:
        hook.remove()
    if model is not None:
        d = torch.tensor(descriptors, dtype=torch.float32)
        g = torch.tensor(gt_descriptors, dtype=torch.float32)
        print(f"logistic regression on the model's LesionDescriptors: test AUC {_logistic_auc(d, y, train):.3f}")
        transfer = _auc(_logistic(g[train], y[train])(d[~train]), y[~train])
        print(f"  fitted on the ground-truth lesions' descriptors, tested on the predicted ones: {transfer:.3f}")
    if margins:
        m, f = torch.tensor(margins), torch.tensor(fc_margins)
        print(f"the checkpoint's classifier: test AUC {_auc(m[~train], y[~train]):.3f}; its linear layer alone "
              f"{_auc(f[~train], y[~train]):.3f} (logit-margin std {float(f[~train].std()):.3f})")


def fit_probe(cfg, name: str, extra: list[str], config_path: str, overrides: list[str], images: int,
              epochs: int) -> None:
    """Train a classification-only model on ``images`` labelled images; print the training CE per epoch."""
    cfg = load_config(config_path, [*overrides, "model.tasks=[classification]", "data.augment=false",
                                    "train.batch_size=16", "train.progress=false", *extra])
    seed_everything(cfg.train.seed)
    train = make_datasets(cfg.data, load_records(cfg.data), seed=cfg.train.seed)["train"]
    labelled = [i for i, rec in enumerate(train.records) if rec.label is not None][:images]
    objects = build_model_and_loss(cfg)
    optimizer = build_optimizer({"model": objects.model, "loss": objects.loss_fn}, cfg.train)
    loader = make_loader(Subset(train, labelled), cfg, train=True)
    losses = [
        train_epoch(objects.model, objects.loss_fn, loader, optimizer, precision="bf16").task_losses["classification"]
        for _ in range(epochs)
    ]
    print(f"  {name:>28}: training CE per epoch " + " ".join(f"{v:.3f}" for v in losses))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/centralized_mammography.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--fit", action="store_true", help="also run the fitting-speed probe")
    parser.add_argument("--fit-images", type=int, default=64)
    parser.add_argument("--fit-epochs", type=int, default=15)
    parser.add_argument("--checkpoint", help="score lesions predicted by this checkpoint instead of the ground truth")
    args = parser.parse_args()
    setup_logging(logging.WARNING)
    torch.set_num_threads(1)
    cfg = load_config(args.config, args.overrides)
    model = None
    if args.checkpoint:
        checkpoint = load_checkpoint(args.checkpoint)
        model = build_model(
            checkpoint.config.model, checkpoint.config.data.image_size, len(checkpoint.config.data.classes)
        )
        load_model_state(checkpoint, model)
        model.eval()
    signal(cfg, model)
    if args.fit:
        print(f"\nfitting {args.fit_images} labelled training images, {args.fit_epochs} epochs, batch 16:")
        probes = {
            "ViT tiny, input_norm none": ["model.depth=4", "train.lr=0.0005", "model.input_norm=none"],
            "ViT tiny, input_norm image": ["model.depth=4", "train.lr=0.0005", "model.input_norm=image"],
            "CNN ResNet-18": ["model.arch=cnn", "train.lr=0.0005"],
        }
        for name, extra in probes.items():
            fit_probe(cfg, name, extra, args.config, args.overrides, args.fit_images, args.fit_epochs)


if __name__ == "__main__":
    main()
