"""The configured data source is read with the config's native-layout options."""

from mtmedformer.config import config_from_dict
from mtmedformer.data.sources import load_records
from tests.data.fixtures_native import build_kermany

FILES = [
    *(f"train/NORMAL/IM-{i:04d}-0001.jpeg" for i in range(6)),
    *(f"train/PNEUMONIA/person{i}_bacteria_{i}.jpeg" for i in range(6)),
    "val/NORMAL/IM-0900-0001.jpeg",
    "val/PNEUMONIA/person900_virus_1.jpeg",
    "test/NORMAL/IM-0950-0001.jpeg",
    "test/PNEUMONIA/person950_bacteria_1.jpeg",
]


def _kermany_records(tmp_path, **native):
    build_kermany(tmp_path, FILES)
    cfg = config_from_dict({"data": {"source": "kermany", "path": str(tmp_path), "classes": ["normal", "pneumonia"],
                                     "native": native}})
    return {r.image.name: r.split for r in load_records(cfg.data)}


def test_kermany_official_val_is_resplit_by_default_and_test_kept(tmp_path):
    splits = _kermany_records(tmp_path)
    assert splits["IM-0950-0001.jpeg"] == "test" and splits["person950_bacteria_1.jpeg"] == "test"
    assert sum(s == "test" for s in splits.values()) == 2  # no extra test patients carved out of train


def test_kermany_keep_official_val_from_config(tmp_path):
    splits = _kermany_records(tmp_path, keep_official_val=True)
    assert splits["IM-0900-0001.jpeg"] == "val" and splits["person900_virus_1.jpeg"] == "val"
