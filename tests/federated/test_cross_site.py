"""Cross-site evaluation: the final global and each site's last local model, scored on every site's test split."""

import csv
import json

import pytest
import torch

from client.app import app as client_app
from fltesting.inprocess import InProcessGrid as LocalGrid
from mtmedformer.config import load_config
from mtmedformer.engine.checkpoint import load_checkpoint
from mtmedformer.errors import ConfigError
from server.app import run_experiment
from server.cross_site import GLOBAL, RESULTS
from server.results import AGGREGATE
from tests.federated.conftest import settings_for, site_nodes

SITES = 3


@pytest.fixture
def finished_run(tmp_path, experiment_file):
    experiment = experiment_file(federated={"rounds": 1, "strategy": "bnp_matching", "cross_site_evaluation": True,
                                            "min_available_nodes": SITES})
    run_experiment(LocalGrid(client_app, site_nodes(SITES)), settings_for(experiment, tmp_path))
    return experiment, tmp_path / "run"


def _rows(run_dir):
    with (run_dir / RESULTS).open() as handle:
        return list(csv.DictReader(handle))


def test_every_model_is_scored_on_every_site(finished_run):
    # Prepare
    _, run_dir = finished_run
    history = [json.loads(line) for line in (run_dir / "sites.jsonl").read_text().splitlines()]
    test_rows = {r["site"]: r for r in history if r["phase"] == "test"}
    # Execute
    rows = _rows(run_dir)
    # Assert: (global + one local model per site) x (each site + the aggregate)
    sites = sorted(test_rows)
    assert len(sites) == SITES
    assert {(r["model"], r["site"]) for r in rows} == {
        (model, site) for model in [GLOBAL, *sites] for site in [*sites, AGGREGATE]
    }
    # the global model's row at a site is that site's final test evaluation: same model, split and threshold
    for site in sites:
        row = next(r for r in rows if r["model"] == GLOBAL and r["site"] == site)
        for key in ("segmentation/dice", "classification/auc", "detection/map50", "num-examples"):
            if test_rows[site].get(key) is not None:
                assert float(row[key]) == pytest.approx(float(test_rows[site][key]), abs=1e-9), (site, key)
    # each local model is the weights its site sent in the last round, as a standard checkpoint
    global_state = load_checkpoint(run_dir / "checkpoints" / "round_001.pt").model_state
    for site in sites:
        local = load_checkpoint(run_dir / "checkpoints" / f"local_{site}.pt")
        assert local.extra["site"] == site and local.epoch == 1
        assert any(not torch.equal(local.model_state[k], global_state[k]) for k in global_state)
    report = (run_dir / "report.md").read_text()
    assert "## Cross-site evaluation" in report and (run_dir / "plots" / "cross_site.png").stat().st_size > 0


def test_resumed_server_redoes_an_unfinished_cross_site_evaluation(finished_run, tmp_path):
    # Prepare: a server killed after the last round, before the matrix was written
    experiment, run_dir = finished_run
    before = _rows(run_dir)
    (run_dir / RESULTS).unlink()
    # Execute
    run_experiment(LocalGrid(client_app, site_nodes(SITES)), settings_for(experiment, tmp_path, resume=True))
    # Assert: the same matrix, from the saved local models
    after = _rows(run_dir)
    key = ("model", "site", "mean_score", "segmentation/dice", "classification/auc")
    assert [tuple(r.get(k) for k in key) for r in after] == [tuple(r.get(k) for k in key) for r in before]


def test_secure_aggregation_refuses_cross_site_evaluation():
    with pytest.raises(ConfigError, match=r"cross_site_evaluation"):
        load_config(None, ["federated.privacy.secure_aggregation=true", "federated.cross_site_evaluation=true"])
