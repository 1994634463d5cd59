"""Convert the mini-MIAS mammograms (Suckling et al. 1994) into the project's manifest format.

Source layout (as distributed by MIAS/PEIPA, ``all-mias.tar``)::

    <src>/Info.txt       one line per abnormality: REFNUM TISSUE CLASS [SEVERITY [X Y RADIUS]]
    <src>/mdbNNN.pgm     322 films, 8-bit PGM, 1024 x 1024 (200 micron pixel edge)

What the conversion does
------------------------
- Each film becomes ``images/mdbNNN.png`` (8-bit grey, resized to ``size`` x ``size`` with a box filter when
  ``size`` is given, otherwise the native pixels). With ``--crop-breast`` the film is first cropped to the
  breast's bounding box (:func:`breast_box`): the breast fills about 570 of the film's 1024 columns, so the
  crop enlarges lesions about 1.8x across (and stretches them: the aspect ratio is not kept).
- Abnormalities with a centre and radius become filled circles in ``masks/mdbNNN.png`` (the union of a film's
  circles) and one box each (the circle's bounding square clipped to the image, pixel-edge ``[x0, y0, x1,
  y1]``). MIAS gives the centre with the origin at the *bottom-left* corner, so the row is ``H - y``. The
  circle is the radiologists' "approximate radius of a circle enclosing the abnormality": a coarse outline,
  not a lesion contour (for calcification clusters it encloses the cluster).
- ``label``: ``malignant`` if any abnormality of the film is malignant (``M``), else ``benign``; normal films
  (``NORM``) have no label (no lesion to classify), an all-zero mask and ``boxes = []`` (annotated, no lesion).
  Films whose abnormality has no centre (``*NOTE 3*``: widely distributed calcifications; ``mdb059``) keep
  their label but leave mask and boxes empty (not annotated).
- ``patient_id``: MIAS lists films in left/right pairs of one woman (``mdb001``/``mdb002``, ...), so film
  ``n`` belongs to patient ``(n + 1) // 2``. ``split`` is left empty (the project's seeded patient-level
  split assigns it), ``site`` is ``MIAS``. Extra columns ``abnormality`` (MIAS classes, ``+``-joined) and
  ``tissue`` (``F``/``G``/``D``) are kept as text.
- Afterwards the manifest is read back with :func:`~mtmedformer.data.manifest.read_manifest` and every image
  and mask is decoded once (:mod:`benchmarks.real_data.decode`).

Usage::

    python -m benchmarks.real_data.mini_mias --src /work/data/mini-mias --out /work/data/mini-mias-manifest \\
        [--size 512] [--crop-breast]

The MIAS licence (``Licence.txt`` of the set) allows research use only; see ``docs/real-data.md``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from benchmarks.real_data.decode import decode_all
from mtmedformer.atomic import atomic_write_bytes, atomic_write_text
from mtmedformer.data.manifest import read_manifest
from mtmedformer.errors import DataError

CLASSES: tuple[str, str] = ("benign", "malignant")
SITE = "MIAS"
INFO = "Info.txt"
MANIFEST = "manifest.csv"
HEADER = ("image", "label", "mask", "boxes", "patient_id", "split", "site", "abnormality", "tissue")
_LINE = re.compile(
    r"(?P<ref>mdb\d{3})\s+(?P<tissue>[FGD])\s+(?P<kind>CALC|CIRC|SPIC|MISC|ARCH|ASYM|NORM)"
    r"(?:\s+(?P<severity>[BM]))?(?:\s+(?P<x>\d+)\s+(?P<y>\d+)\s+(?P<r>\d+))?(?:\s+\*NOTE 3\*)?\s*"
)


@dataclass(frozen=True)
class Abnormality:
    """One line of ``Info.txt``: class, severity (``B``/``M``/``None`` for normal) and circle if given."""

    kind: str
    severity: str | None
    circle: tuple[float, float, float] | None  # (x, y from the bottom, radius) in native pixels


@dataclass(frozen=True)
class Film:
    """One mammogram and its abnormality lines (a normal film has one ``NORM`` line)."""

    ref: str
    tissue: str
    abnormalities: tuple[Abnormality, ...]

    @property
    def patient_id(self) -> str:
        """``mias<k>``: films ``2k-1`` and ``2k`` are the right and left breast of one patient."""
        return f"mias{(int(self.ref[3:]) + 1) // 2:03d}"

    @property
    def label(self) -> str | None:
        """``malignant`` if any abnormality is, ``benign`` otherwise; ``None`` for a normal film."""
        severities = {a.severity for a in self.abnormalities if a.kind != "NORM"}
        if not severities:
            return None
        return "malignant" if "M" in severities else "benign"


def parse_info(path: Path) -> list[Film]:
    """Read ``Info.txt`` into films in file order.

    Raises
    ------
    DataError
        If the file is missing, a data line does not follow the documented format, a film mixes ``NORM``
        with abnormalities, or an abnormal line has no severity.
    """
    if not path.is_file():
        raise DataError("Info.txt not found; point --src at the unpacked all-mias folder", path=path)
    films: dict[str, list[tuple[str, Abnormality]]] = {}
    for number, raw in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        line = raw.strip()
        if not line.startswith("mdb"):
            continue  # the description and notes around the table
        match = _LINE.fullmatch(line)
        origin = f"{path.name} line {number}"
        if match is None:
            raise DataError(f"cannot parse {line!r}; expected 'mdbNNN TISSUE CLASS [B|M [X Y RADIUS]]'", origin=origin)
        kind, severity = match["kind"], match["severity"]
        if (kind == "NORM") != (severity is None):
            raise DataError(f"{line!r}: a NORM film has no severity, every abnormality has B or M", origin=origin)
        circle = (float(match["x"]), float(match["y"]), float(match["r"])) if match["x"] else None
        films.setdefault(match["ref"], []).append((match["tissue"], Abnormality(kind, severity, circle)))
    result = []
    for ref, lines in films.items():
        kinds = {a.kind for _, a in lines}
        if "NORM" in kinds and len(lines) > 1:
            raise DataError(f"{ref} is listed as NORM and with abnormalities; keep one", path=path)
        result.append(Film(ref, lines[0][0], tuple(a for _, a in lines)))
    if not result:
        raise DataError("Info.txt lists no films (no line starts with 'mdb')", path=path)
    return result


def breast_box(film: np.ndarray, threshold: int = 20, margin: int = 8) -> tuple[int, int, int, int]:
    """Return the bounding box ``(x0, y0, x1, y1)`` (pixel edges, top-left origin) of the breast on a film.

    The breast is the largest connected region brighter than ``threshold`` (8-bit) after a 4-pixel opening
    that cuts thin bridges; the film's burned-in labels and markers are separate, smaller regions and fall
    outside unless they touch it. The box grows by ``margin`` pixels on every side, clipped to the film.
    Raises ``DataError`` when nothing is brighter than the threshold (a blank film).
    """
    bright = ndimage.binary_opening(film > threshold, structure=np.ones((4, 4), bool))
    labels, count = ndimage.label(bright)
    if count == 0:
        raise DataError(f"no pixel above {threshold}: the film looks blank; convert without --crop-breast")
    largest = 1 + int(np.argmax(ndimage.sum_labels(bright, labels, index=np.arange(1, count + 1))))
    rows, cols = np.nonzero(labels == largest)
    height, width = film.shape
    return (max(0, int(cols.min()) - margin), max(0, int(rows.min()) - margin),
            min(width, int(cols.max()) + 1 + margin), min(height, int(rows.max()) + 1 + margin))  # fmt: skip


def annotate(
    film: Film, native: tuple[int, int], size: tuple[int, int], crop: tuple[int, int, int, int] | None = None
) -> tuple[np.ndarray | None, list | None]:
    """Return the film's lesion mask ``(H, W)`` bool and boxes in the output frame, or ``None`` where not annotated.

    Parameters
    ----------
    native
        ``(H, W)`` of the source film: MIAS coordinates are in its pixels, ``y`` counted from the bottom.
    size
        ``(H, W)`` of the written image; coordinates scale by ``size / crop size`` per axis (so a circle
        becomes an axis-aligned ellipse when the crop is not square).
    crop
        ``(x0, y0, x1, y1)`` of the written region in native pixels, top-left origin; ``None`` = whole film.
    """
    height, width = size
    x0, y0, x1, y1 = crop or (0, 0, native[1], native[0])
    scale_y, scale_x = height / (y1 - y0), width / (x1 - x0)
    if film.label is None:
        return np.zeros(size, bool), []
    circles = [a.circle for a in film.abnormalities if a.circle is not None]
    if len(circles) < len(film.abnormalities):
        return None, None  # a lesion without a location cannot be outlined
    rows, cols = np.ogrid[:height, :width]
    mask = np.zeros(size, bool)
    boxes = []
    for x, y, radius in circles:
        cx, cy = (x - x0) * scale_x, (native[0] - y - y0) * scale_y  # pixel-edge coordinates, origin top-left
        rx, ry = radius * scale_x, radius * scale_y
        mask |= ((cols + 0.5 - cx) / rx) ** 2 + ((rows + 0.5 - cy) / ry) ** 2 <= 1.0
        box = [max(0.0, cx - rx), max(0.0, cy - ry), min(float(width), cx + rx), min(float(height), cy + ry)]
        boxes.append([round(v, 2) for v in box])
    return mask, boxes


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def convert(src: Path, out: Path, size: int | None = None, crop_breast: bool = False) -> Path:
    """Write ``out/images``, ``out/masks`` and ``out/manifest.csv`` from the mini-MIAS folder ``src``.

    Returns
    -------
    Path
        The manifest CSV.

    Raises
    ------
    DataError
        If ``Info.txt`` or a listed film is missing or unreadable, or the written set fails the manifest
        check or the decode pass.
    ValueError
        If ``size`` is given and below 32.
    """
    if size is not None and size < 32:
        raise ValueError(f"--size must be at least 32 pixels, got {size}")
    films = parse_info(src / INFO)
    rows = []
    for film in films:
        pgm = src / f"{film.ref}.pgm"
        try:
            with Image.open(pgm) as handle:
                image = handle.convert("L")
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the film ({exc}); re-download the set", path=pgm) from None
        native = (image.height, image.width)
        crop = breast_box(np.asarray(image)) if crop_breast else None
        if crop is not None:
            image = image.crop(crop)
        if size is not None:
            image = image.resize((size, size), Image.Resampling.BOX)
        shape = (image.height, image.width)
        mask, boxes = annotate(film, native, shape, crop)
        image_rel = f"images/{film.ref}.png"
        atomic_write_bytes(out / image_rel, _png(np.asarray(image)))
        mask_rel = ""
        if mask is not None:
            mask_rel = f"masks/{film.ref}.png"
            atomic_write_bytes(out / mask_rel, _png(mask.astype(np.uint8) * 255))
        rows.append([
            image_rel, film.label or "", mask_rel, "" if boxes is None else json.dumps(boxes), film.patient_id, "",
            SITE, "+".join(a.kind for a in film.abnormalities), film.tissue,
        ])  # fmt: skip
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    manifest = out / MANIFEST
    atomic_write_text(manifest, text.getvalue())
    records = read_manifest(manifest, CLASSES).records
    report = decode_all(records)
    if report.failures:
        raise DataError(f"{len(report.failures)} written files do not decode, e.g. {report.failures[0]}", path=out)
    return manifest


def summary(manifest: Path) -> dict[str, object]:
    """Counts of a converted set: films, patients, labels, annotated masks and boxes, lesions."""
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels: dict[str, int] = {}
    for row in rows:
        key = row["label"] or "none (normal)"
        labels[key] = labels.get(key, 0) + 1
    return {
        "images": len(rows),
        "patients": len({r["patient_id"] for r in rows}),
        "labels": labels,
        "with_mask": sum(bool(r["mask"]) for r in rows),
        "with_lesion_boxes": sum(r["boxes"] not in ("", "[]") for r in rows),
        "lesion_boxes": sum(len(json.loads(r["boxes"])) for r in rows if r["boxes"]),
        "not_localised": sum(not r["mask"] for r in rows),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: convert, check, print the counts as JSON; exit status 2 on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help="folder with Info.txt and mdbNNN.pgm")
    parser.add_argument("--out", type=Path, required=True, help="output folder (manifest.csv, images/, masks/)")
    parser.add_argument("--size", type=int, help="resize films to SIZE x SIZE pixels (default: native)")
    parser.add_argument("--crop-breast", action="store_true", help="crop each film to the breast's bounding box first")
    args = parser.parse_args(argv)
    try:
        manifest = convert(args.src, args.out, args.size, args.crop_breast)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"manifest": str(manifest), **summary(manifest)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
