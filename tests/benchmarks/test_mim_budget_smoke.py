"""Smoke test of benchmarks/real_data/mim_budget.py on a minuscule set: both arms run and are recorded.

No figure is asserted (the machine is shared and the budget is seconds): only that each arm trained, the MIM
arm pre-trained first and started from its encoder, and the results file holds both.
"""

import json

import benchmarks.real_data.mim_budget as mb


def test_both_arms_recorded(tmp_path) -> None:
    out = tmp_path / "mim.json"
    settings = [
        f"data.synthetic.cache_dir={tmp_path / 'cache'}", "data.synthetic.num_sites=2",
        "data.synthetic.images_per_site=12", "data.synthetic.image_size=32", "data.image_size=32",
        "model.patch_size=8", "model.depth=1", "model.seg_feature_size=4", "model.detection.feature_size=4",
        "model.detection.stride=8", "train.epochs=1", "train.batch_size=4", "train.threads=1", "train.progress=false",
    ]  # fmt: skip

    args = ["--name", "smoke", "--out", str(out), "--work", str(tmp_path / "runs"), "--budget", "0.2"]
    args += ["--mim-minutes", "0.02", *[a for s in settings for a in ("--set", s)]]

    status = mb.main(args)

    results = json.loads(out.read_text())
    assert status == 0 and set(results["arms"]) == {"scratch", "mim"}
    mim = results["arms"]["mim"]
    assert mim["mim"]["steps"] >= 1 and mim["epochs"] == results["arms"]["scratch"]["epochs"] == 1
    assert "mim_encoder.pt" in (tmp_path / "runs" / "smoke" / "mim" / "config.yaml").read_text()
    assert all(r["test"]["segmentation/n"] for r in results["arms"].values())
