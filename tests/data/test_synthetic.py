"""Tests of the synthetic generator: determinism, caching, the manifest format and what the images show."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mtmedformer.config import config_from_dict
from mtmedformer.config.data import SyntheticConfig
from mtmedformer.data.image_io import read_image, read_mask
from mtmedformer.data.records import SPLITS
from mtmedformer.data.synthetic import generate_synthetic, synthetic_manifest, synthetic_set_dir, writer
from mtmedformer.data.synthetic.chest_xray import draw_chest_xray
from mtmedformer.data.synthetic.mammography import draw_mammogram
from mtmedformer.data.synthetic.primitives import components_to_boxes
from mtmedformer.data.synthetic.sites import site_name, site_profiles
from mtmedformer.errors import ConfigError, DataError

MODALITIES = ("mammography", "chest_xray")


def small_config(modality: str = "mammography", **kwargs: object) -> SyntheticConfig:
    settings: dict[str, object] = {"modality": modality, "num_sites": 2, "images_per_site": 12, "image_size": 48}
    settings.update(kwargs)
    return SyntheticConfig(**settings)  # type: ignore[arg-type]


def read_rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("modality", MODALITIES)
def test_same_config_gives_byte_identical_files(tmp_path: Path, modality: str) -> None:
    # Prepare
    cfg = small_config(modality)

    # Execute
    generate_synthetic(cfg, tmp_path / "a")
    generate_synthetic(cfg, tmp_path / "b")

    # Assert
    first, second = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    assert len(first) > cfg.num_sites * cfg.images_per_site
    assert first == second


@pytest.mark.parametrize("modality", MODALITIES)
def test_different_seeds_give_different_images(tmp_path: Path, modality: str) -> None:
    # Prepare
    rows = {}

    # Execute
    for seed in (0, 1):
        manifest = generate_synthetic(small_config(modality, seed=seed), tmp_path / str(seed))
        rows[seed] = [(manifest.parent / r["image"]).read_bytes() for r in read_rows(manifest)]

    # Assert
    assert sum(a != b for a, b in zip(rows[0], rows[1], strict=True)) == len(rows[0])


def test_cache_is_generated_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    cfg = small_config(cache_dir=str(tmp_path / "cache"))
    first = synthetic_manifest(cfg)
    stamp = first.stat().st_mtime_ns

    def must_not_run(*args: object, **kwargs: object) -> Path:
        raise AssertionError("the cached set was generated again")

    monkeypatch.setattr(writer, "generate_synthetic", must_not_run)

    # Execute
    second = synthetic_manifest(cfg)

    # Assert
    assert second == first
    assert second.stat().st_mtime_ns == stamp
    assert first.parent == synthetic_set_dir(cfg)
    assert [p.name for p in first.parent.parent.iterdir()] == [first.parent.name]  # no temporary folder left


def test_cache_location_follows_environment_and_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.setenv(writer.CACHE_ENV, str(tmp_path / "env-cache"))
    base = small_config()

    # Execute
    default_dir = synthetic_set_dir(base)
    explicit_dir = synthetic_set_dir(small_config(cache_dir=str(tmp_path / "mine")))
    other_seed_dir = synthetic_set_dir(small_config(seed=5))

    # Assert
    assert default_dir.is_relative_to(tmp_path / "env-cache")
    assert explicit_dir.name == default_dir.name  # cache_dir is not part of the set's identity
    assert explicit_dir.is_relative_to(tmp_path / "mine")
    assert other_seed_dir.name != default_dir.name


def test_losing_a_generation_race_uses_the_winners_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: while this process generates, "another process" finishes the same set first.
    cfg = small_config(cache_dir=str(tmp_path))
    real_generate = writer.generate_synthetic

    def generate_and_lose(cfg_: SyntheticConfig, out_dir: Path) -> Path:
        real_generate(cfg_, synthetic_set_dir(cfg_))
        return real_generate(cfg_, out_dir)

    monkeypatch.setattr(writer, "generate_synthetic", generate_and_lose)

    # Execute
    manifest = synthetic_manifest(cfg)

    # Assert
    assert manifest == synthetic_set_dir(cfg) / "manifest.csv"
    assert len(read_rows(manifest)) == cfg.num_sites * cfg.images_per_site
    assert [p.name for p in manifest.parent.parent.iterdir()] == [manifest.parent.name]


@pytest.mark.parametrize("modality", MODALITIES)
def test_manifest_format(tmp_path: Path, modality: str) -> None:
    # Prepare
    cfg = small_config(modality, images_per_site=20)
    classes = {"mammography": ("benign", "malignant"), "chest_xray": ("normal", "pneumonia")}[modality]

    # Execute
    manifest = generate_synthetic(cfg, tmp_path / "set")
    rows = read_rows(manifest)

    # Assert
    assert manifest.read_text(encoding="utf-8").splitlines()[0] == "image,label,mask,boxes,patient_id,split,site"
    assert len(rows) == cfg.num_sites * cfg.images_per_site
    assert {r["site"] for r in rows} == {"site-a", "site-b"}
    assert {r["split"] for r in rows} <= set(SPLITS)
    split_of_patient: dict[str, set[str]] = {}
    for row in rows:
        split_of_patient.setdefault(row["patient_id"], set()).add(row["split"])
        assert not Path(row["image"]).is_absolute()
        image = read_image(manifest.parent / row["image"])
        assert image.shape == (cfg.image_size, cfg.image_size)
        assert row["label"] in (*classes, "")
        boxes = json.loads(row["boxes"])
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= cfg.image_size and 0 <= y0 < y1 <= cfg.image_size
        if modality == "mammography":
            assert not Path(row["mask"]).is_absolute()
            mask = read_mask(manifest.parent / row["mask"], image.shape)
            assert boxes == components_to_boxes(mask)
        else:
            assert row["mask"] == ""
            assert (len(boxes) > 0) == (row["label"] == "pneumonia")
    assert all(len(splits) == 1 for splits in split_of_patient.values())
    assert len(split_of_patient) < len(rows)  # some patients have two images


def test_boxes_use_the_pixel_edge_convention() -> None:
    # Prepare: a lesion covering columns 2..4 and rows 1..2, and a diagonal-touching pixel (8-connected).
    mask = np.zeros((8, 8), dtype=bool)
    mask[1:3, 2:5] = True
    mask[3, 5] = True
    mask[6, 0] = True

    # Execute
    boxes = components_to_boxes(mask)

    # Assert
    assert boxes == [[2, 1, 6, 4], [0, 6, 1, 7]]


def test_lesion_free_mammograms_are_annotated_negatives_without_label(tmp_path: Path) -> None:
    # Prepare
    cfg = small_config(lesion_free_fraction=0.5, images_per_site=30)

    # Execute
    manifest = generate_synthetic(cfg, tmp_path / "set")
    rows = read_rows(manifest)

    # Assert
    lesion_free = [r for r in rows if r["label"] == ""]
    with_lesion = [r for r in rows if r["label"] != ""]
    assert lesion_free and with_lesion
    for row in lesion_free:
        assert row["boxes"] == "[]"
        assert not read_mask(manifest.parent / row["mask"]).any()
    for row in with_lesion:
        assert json.loads(row["boxes"])
        assert read_mask(manifest.parent / row["mask"]).any()


@pytest.mark.parametrize(
    ("setting", "column"),
    [("label_withheld_fraction", "label"), ("mask_withheld_fraction", "mask"), ("boxes_withheld_fraction", "boxes")],
)
@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_withheld_annotations_leave_cells_empty(tmp_path: Path, setting: str, column: str, fraction: float) -> None:
    # Prepare
    cfg = small_config(lesion_free_fraction=0.0, **{setting: fraction})

    # Execute
    rows = read_rows(generate_synthetic(cfg, tmp_path / "set"))

    # Assert
    empty = [r[column] == "" for r in rows]
    assert all(empty) if fraction == 1.0 else not any(empty)


def test_sites_differ_in_look_and_sixteen_bit_site_is_written(tmp_path: Path) -> None:
    # Prepare
    cfg = small_config(num_sites=3, images_per_site=16)
    profiles = {p.name: p for p in site_profiles(3)}

    # Execute
    manifest = generate_synthetic(cfg, tmp_path / "set")
    stats: dict[str, list[float]] = {}
    modes: dict[str, set[str]] = {}
    for row in read_rows(manifest):
        path = manifest.parent / row["image"]
        full_scale = 4095.0 if profiles[row["site"]].bit_depth == 16 else 255.0
        stats.setdefault(row["site"], []).append(float(read_image(path).mean() / full_scale))
        with Image.open(path) as img:
            modes.setdefault(row["site"], set()).add(img.mode)

    # Assert
    assert modes == {"site-a": {"L"}, "site-b": {"I;16"}, "site-c": {"L"}}
    means = {site: np.mean(values) for site, values in stats.items()}
    spread = {site: np.std(values) / np.sqrt(len(values)) for site, values in stats.items()}
    sites = sorted(means)
    for i, a in enumerate(sites):
        for b in sites[i + 1 :]:
            assert abs(means[a] - means[b]) > 3 * (spread[a] + spread[b]), (a, b, means, spread)


@pytest.mark.parametrize("modality", MODALITIES)
def test_class_prevalence_follows_each_sites_profile(modality: str) -> None:
    # Prepare
    cfg = SyntheticConfig(modality=modality, num_sites=3, images_per_site=3000, lesion_free_fraction=0.0)
    positive = "malignant" if modality == "mammography" else "pneumonia"

    # Execute
    observed = {}
    for profile in site_profiles(3):
        plan = writer.plan_site(cfg, profile)
        observed[profile.name] = (np.mean([p.finding == positive for p in plan]), profile.prevalence)

    # Assert
    for rate, prevalence in observed.values():
        assert abs(rate - prevalence) < 0.05
    assert len({round(prevalence, 2) for _, prevalence in observed.values()}) == 3


def compactness(mask: np.ndarray) -> float:
    """4 pi area / perimeter^2, perimeter counted as exposed pixel edges (1 for a square, ~pi/4 for a disc)."""
    padded = np.pad(mask, 1).astype(np.int8)
    edges = sum(int(np.abs(np.diff(padded, axis=axis)).sum()) for axis in (0, 1))
    return 4.0 * np.pi * mask.sum() / edges**2


def test_malignant_masses_are_less_compact_than_benign() -> None:
    # Prepare
    values: dict[str, list[float]] = {"benign": [], "malignant": []}

    # Execute
    for pathology, found in values.items():
        for i in range(40):
            mask = draw_mammogram(np.random.default_rng([7, i]), 128, pathology).mask
            labels, count = ndimage.label(mask)
            largest = labels == 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, count + 1))))
            found.append(compactness(largest))

    # Assert: clearly separated on average, but overlapping (not trivially separable).
    benign, malignant = np.array(values["benign"]), np.array(values["malignant"])
    assert benign.mean() > malignant.mean() + 0.05
    assert malignant.max() > np.percentile(benign, 10)


def test_pneumonia_opacities_raise_density_inside_their_boxes() -> None:
    # Prepare
    seeds = range(10)

    # Execute: draw the same chest with and without the finding; only the random stream after the anatomy differs.
    gains = []
    for seed in seeds:
        sick = draw_chest_xray(np.random.default_rng([3, seed]), 96, "pneumonia")
        healthy = draw_chest_xray(np.random.default_rng([3, seed]), 96, "normal")
        for x0, y0, x1, y1 in sick.boxes:
            gains.append(float((sick.density - healthy.density)[y0:y1, x0:x1].mean()))

    # Assert
    assert healthy.boxes == []
    assert len(gains) >= len(seeds)
    assert min(gains) > 0.0


@pytest.mark.parametrize("modality", MODALITIES)
def test_conspicuity_scales_lesion_contrast(modality: str) -> None:
    # Prepare
    draw = {"mammography": draw_mammogram, "chest_xray": draw_chest_xray}[modality]
    finding = {"mammography": "malignant", "chest_xray": "pneumonia"}[modality]

    # Execute: same random stream, only the conspicuity differs.
    faint = draw(np.random.default_rng(11), 96, finding, conspicuity=0.5)
    clear = draw(np.random.default_rng(11), 96, finding, conspicuity=2.0)

    # Assert
    boxes = faint.boxes if faint.boxes is not None else components_to_boxes(faint.mask)
    x0, y0, x1, y1 = boxes[0]
    assert clear.density[y0:y1, x0:x1].mean() > faint.density[y0:y1, x0:x1].mean() + 0.02
    outside = np.ones_like(faint.density, dtype=bool)
    for bx0, by0, bx1, by1 in boxes:
        outside[max(by0 - 30, 0) : by1 + 30, max(bx0 - 30, 0) : bx1 + 30] = False
    np.testing.assert_allclose(clear.density[outside], faint.density[outside], atol=0.02)


def test_generate_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    # Prepare
    (tmp_path / "old.txt").write_text("stale", encoding="utf-8")

    # Execute / Assert
    with pytest.raises(DataError, match="not empty"):
        generate_synthetic(small_config(), tmp_path)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"seed": -1}, "data.synthetic.seed"),
        ({"lesion_free_fraction": 1.5}, "data.synthetic.lesion_free_fraction"),
        ({"mask_withheld_fraction": -0.1}, "data.synthetic.mask_withheld_fraction"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "training split"),
        ({"image_size": 16}, "at least 32"),
        ({"lesion_conspicuity": 0.0}, "data.synthetic.lesion_conspicuity: must be > 0"),
    ],
)
def test_bad_synthetic_settings_are_rejected(settings: dict[str, object], message: str) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"data": {"synthetic": settings}})


@pytest.mark.parametrize(("index", "name"), [(0, "site-a"), (1, "site-b"), (25, "site-z"), (26, "site-aa")])
def test_site_names(index: int, name: str) -> None:
    # Execute / Assert
    assert site_name(index) == name
