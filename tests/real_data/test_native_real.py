"""The native loaders on the fetched public sets as published (skipped where they are absent)."""

import json
from pathlib import Path

from benchmarks.real_data.decode import decode_all
from mtmedformer.cli import main
from mtmedformer.data.loaders import load_kermany, load_rsna

KERMANY_CLASSES = ("normal", "pneumonia")


def test_kermany_as_published_loads_with_defaults(real_set) -> None:
    root = real_set("kermany")

    records = load_kermany(root, KERMANY_CLASSES)

    official = {(r.extra["official_split"], r.label) for r in records}
    assert {"train", "test"} <= {s for s, _ in official}
    test = [r for r in records if r.extra["official_split"] == "test"]
    assert {r.split for r in test} == {"test"}
    assert not {r.patient_id for r in test} & {r.patient_id for r in records if r.split != "test"}
    assert not decode_all(records).failures


def test_kermany_check_data_default_path(real_set, capsys) -> None:
    root = real_set("kermany")

    status = main(["check-data", "--set", "data.source=kermany", "--set", f"data.path={root}",
                   "--set", "data.classes=[normal,pneumonia]"])  # fmt: skip

    assert status == 0
    counts = json.loads(capsys.readouterr().out)
    assert {"train", "val", "test"} == set(counts)
    assert sum(split["images"] for split in counts.values()) == len(list(Path(root).rglob("*.jpeg")))


def test_rsna_as_published_loads(real_set) -> None:
    root = real_set("rsna")

    records = load_rsna(root, KERMANY_CLASSES)

    assert records and all(r.boxes is not None for r in records)
    assert all(r.label == ("pneumonia" if r.boxes else "normal") for r in records)
    assert not decode_all(records).failures
