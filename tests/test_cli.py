import csv
import json

from mtmedformer.cli import main


def test_synth_writes_a_manifest_and_check_data_counts_it(tmp_path, capsys):
    # Prepare
    out = tmp_path / "synthetic"
    settings = [
        "--set",
        "data.synthetic.num_sites=2",
        "--set",
        "data.synthetic.images_per_site=6",
        "--set",
        "data.synthetic.image_size=32",
        "--set",
        f"data.synthetic.cache_dir={tmp_path / 'cache'}",
    ]
    # Execute
    assert main(["synth", *settings, "--out", str(out)]) == 0
    manifest = capsys.readouterr().out.strip()
    assert main(["check-data", *settings]) == 0
    counts = json.loads(capsys.readouterr().out)
    # Assert
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and {"image", "label", "mask", "boxes", "patient_id", "split", "site"} <= set(rows[0])
    assert sum(split["images"] for split in counts.values()) == 12


def test_synth_rejects_classes_that_do_not_match_the_modality(tmp_path, capsys):
    code = main(["synth", "--set", "data.synthetic.modality=chest_xray", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "data.classes: the synthetic chest_xray set has classes ['normal', 'pneumonia']" in capsys.readouterr().err
