"""The mini-MIAS converter: Info.txt parsing, circle masks and boxes (origin bottom-left), labels, patients."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.real_data.decode import decode_all
from benchmarks.real_data.mini_mias import CLASSES, breast_box, convert, main, parse_info, summary
from mtmedformer.data.manifest import read_manifest
from mtmedformer.errors import DataError

INFO_LINES = [
    "REFNUM BG CLASS SEVERITY X Y RADIUS",  # prose around the table is ignored
    "mdb001 G CIRC B 20 40 8",
    "mdb002 G NORM ",
    "mdb003 D CALC M *NOTE 3* ",
    "mdb004 F CIRC B 10 10 4",
    "mdb004 F SPIC M 50 50 6",
]


def _write_set(folder: Path, lines=INFO_LINES, side: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Info.txt").write_text("MIAS header text\n\n" + "\n".join(lines) + "\n")
    refs = {line.split()[0] for line in lines if line.startswith("mdb")}
    rng = np.random.default_rng(0)
    for ref in refs:
        Image.fromarray(rng.integers(0, 255, (side, side), dtype=np.uint8)).save(folder / f"{ref}.pgm")
    return folder


def _rows(manifest: Path) -> dict[str, dict[str, str]]:
    with manifest.open(newline="") as handle:
        return {Path(r["image"]).stem: r for r in csv.DictReader(handle)}


def test_convert_masks_boxes_labels_patients(tmp_path: Path) -> None:
    # Prepare
    src = _write_set(tmp_path / "src")

    # Execute
    manifest = convert(src, tmp_path / "out")

    # Assert
    rows = _rows(manifest)
    assert rows["mdb001"]["label"] == "benign"
    assert json.loads(rows["mdb001"]["boxes"]) == [[12.0, 16.0, 28.0, 32.0]]  # row centre = 64 - 40
    mask = np.asarray(Image.open(tmp_path / "out" / rows["mdb001"]["mask"])) > 0
    assert mask[24, 20] and not mask[40, 20]  # the centre is counted from the bottom edge
    assert mask.sum() == pytest.approx(np.pi * 8**2, rel=0.1)
    assert rows["mdb002"]["label"] == "" and rows["mdb002"]["boxes"] == "[]"
    assert not (np.asarray(Image.open(tmp_path / "out" / rows["mdb002"]["mask"])) > 0).any()
    assert rows["mdb003"]["label"] == "malignant" and rows["mdb003"]["mask"] == "" and rows["mdb003"]["boxes"] == ""
    assert rows["mdb004"]["label"] == "malignant" and len(json.loads(rows["mdb004"]["boxes"])) == 2
    assert rows["mdb004"]["abnormality"] == "CIRC+SPIC"
    assert [rows[r]["patient_id"] for r in ("mdb001", "mdb002", "mdb003", "mdb004")] == ["mias001"] * 2 + [
        "mias002"
    ] * 2
    assert {r["site"] for r in rows.values()} == {"MIAS"}
    records = read_manifest(manifest, CLASSES).records
    assert len(records) == 4 and not decode_all(records).failures


def test_resize_scales_circles(tmp_path: Path) -> None:
    src = _write_set(tmp_path / "src")

    manifest = convert(src, tmp_path / "out", size=32)

    rows = _rows(manifest)
    assert Image.open(tmp_path / "out" / rows["mdb001"]["image"]).size == (32, 32)
    assert json.loads(rows["mdb001"]["boxes"]) == [[6.0, 8.0, 14.0, 16.0]]


def _film_with_breast(side: int = 128) -> np.ndarray:
    """A dark film with a bright block "breast" at the right edge and a small bright label at the top left."""
    film = np.full((side, side), 5, np.uint8)
    film[20:108, 88:side] = 180
    film[4:12, 4:20] = 250  # burned-in label, a separate region
    return film


def test_breast_box_is_the_largest_bright_region_not_the_label() -> None:
    box = breast_box(_film_with_breast(), margin=0)

    assert box == (88, 20, 128, 108)


def test_breast_box_of_a_blank_film_names_the_option() -> None:
    with pytest.raises(DataError, match="--crop-breast"):
        breast_box(np.zeros((32, 32), np.uint8))


def test_crop_breast_moves_and_stretches_the_circles(tmp_path: Path) -> None:
    # Prepare: one film, lesion centre (100, 64 from the bottom) inside the breast, radius 6
    src = tmp_path / "src"
    src.mkdir()
    (src / "Info.txt").write_text("mdb001 G CIRC B 100 64 6\n")
    Image.fromarray(_film_with_breast()).save(src / "mdb001.pgm")

    # Execute
    manifest = convert(src, tmp_path / "out", size=64, crop_breast=True)

    # Assert: crop (88-8, 20-8, 128, 108+8) = 48 x 104 pixels, written at 64 x 64; row of the centre 128 - 64
    rows = _rows(manifest)
    (box,) = json.loads(rows["mdb001"]["boxes"])
    sx, sy = 64 / 48, 64 / 104
    expected = [(100 - 6 - 80) * sx, (64 - 6 - 12) * sy, (100 + 6 - 80) * sx, (64 + 6 - 12) * sy]
    assert box == pytest.approx(expected, abs=0.01)
    mask = np.asarray(Image.open(tmp_path / "out" / rows["mdb001"]["mask"])) > 0
    assert mask[int((64 - 12) * sy), int((100 - 80) * sx)]  # the centre lands inside the written ellipse
    assert mask.sum() == pytest.approx(np.pi * 6 * sx * 6 * sy, rel=0.15)


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (["mdb001 G CIRC X 1 2 3"], r"line 3: cannot parse 'mdb001 G CIRC X 1 2 3'"),
        (["mdb001 G CIRC 1 2 3"], "every abnormality has B or M"),
        (["mdb001 G CIRC B 1 2"], "cannot parse"),
        (["mdb001 G CIRC"], "every abnormality has B or M"),
        (["mdb001 G NORM", "mdb001 G CIRC B 1 2 3"], "listed as NORM and with abnormalities"),
    ],
)
def test_bad_info_lines(tmp_path: Path, lines: list[str], match: str) -> None:
    src = _write_set(tmp_path / "src", lines)

    with pytest.raises(DataError, match=match):
        parse_info(src / "Info.txt")


def test_missing_film_and_bad_size_exit_2(tmp_path: Path, capsys) -> None:
    src = _write_set(tmp_path / "src")
    (src / "mdb004.pgm").unlink()

    assert main(["--src", str(src), "--out", str(tmp_path / "out")]) == 2
    assert "mdb004.pgm" in capsys.readouterr().err
    assert main(["--src", str(src), "--out", str(tmp_path / "out"), "--size", "8"]) == 2


def test_real_mini_mias_converts_and_checks(real_set, tmp_path: Path) -> None:
    # The published set: 322 films of 161 women, 207 normal; every written file decodes (convert checks).
    manifest = convert(real_set("mini-mias"), tmp_path / "out", size=128)

    counts = summary(manifest)
    assert counts["images"] == 322 and counts["patients"] == 161
    assert counts["labels"]["none (normal)"] == 207
    assert counts["labels"]["benign"] + counts["labels"]["malignant"] == 115
    assert counts["not_localised"] == 4  # three *NOTE 3* calcification films and mdb059
