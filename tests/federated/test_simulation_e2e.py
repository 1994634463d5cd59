"""End to end: `scripts/simulate.sh` (what `make run` calls) runs `flwr run .` on the Ray simulation backend.

One of the three simulated hospitals is made to fail in round 1: the round completes with the other two,
the failure is recorded, and the script stops the local SuperLink it started. The failure comes from a
test-only app: a copy of the app whose ClientApp component is ``fltesting.faulty_app:app`` (the real handlers
behind a fault mod), with ``fltesting`` added to the copy's bundle; the shipped app has no fault switch.
"""

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w
import yaml

from fltesting.faulty_app import FAILING_PARTITION, FAILING_ROUND
from tests.deploy.harness import REPO_ROOT, copy_app
from tests.federated.conftest import TINY_EXPERIMENT

pytestmark = pytest.mark.slow


def _app_with_a_failing_site(dst: Path) -> Path:
    """A copy of the app (what ``flwr run`` bundles, plus ``scripts/``) whose ClientApp injects the fault."""
    app = copy_app(REPO_ROOT, dst)
    for folder in ("scripts", "fltesting"):  # (whether or not copy_app's selection already holds them)
        shutil.copytree(REPO_ROOT / folder, app / folder, ignore=shutil.ignore_patterns("__pycache__"),
                        dirs_exist_ok=True)
    project = tomllib.loads((app / "pyproject.toml").read_text(encoding="utf-8"))
    flwr_app = project["tool"]["flwr"]["app"]
    flwr_app["components"]["clientapp"] = "fltesting.faulty_app:app"
    flwr_app["fab-include"] = [*flwr_app["fab-include"], "/fltesting/**"]
    (app / "pyproject.toml").write_text(tomli_w.dumps(project), encoding="utf-8")
    return app


def test_simulation_with_a_failing_client_completes_and_cleans_up(tmp_path, synthetic_cache):
    # Prepare
    experiment = {**TINY_EXPERIMENT, "data": {**TINY_EXPERIMENT["data"], "synthetic": {
        **TINY_EXPERIMENT["data"]["synthetic"], "cache_dir": str(synthetic_cache)}}}
    experiment["federated"] = {**TINY_EXPERIMENT["federated"], "min_available_nodes": 3, "min_train_nodes": 2,
                               "min_evaluate_nodes": 2}
    experiment["loss"] = {"weighting": "uncertainty"}  # learned task weights: kept in the sites' state files
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    runs = tmp_path / "runs"
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"), "MTMEDFORMER_RUNS": str(runs),
           "VENV": str(Path(sys.executable).parent.parent)}
    app = _app_with_a_failing_site(tmp_path / "app")
    assert (FAILING_PARTITION, FAILING_ROUND) == (1, 1)  # what the assertions below expect
    # Execute
    done = subprocess.run(
        ["bash", "scripts/simulate.sh", str(path), "3"], cwd=app, env=env, capture_output=True, text=True,
        timeout=600,
    )
    # Assert
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = list(runs.iterdir())
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[0]["sites_trained"] == 2 and rounds[0]["failures"] >= 1
    assert rounds[1]["sites_trained"] == 3
    failures = [json.loads(line) for line in (run_dir / "failures.jsonl").read_text().splitlines()]
    assert any("InjectedFault" in f["reason"] and f["round"] == 1 for f in failures)
    assert (run_dir / "report.md").is_file()
    site_state = tmp_path / "site-state" / run_dir.name  # simulate.sh: next to the results root
    assert sorted((d / "round_0002.pt").is_file() for d in site_state.iterdir()) == [True] * 3
    database = tmp_path / "flwr-home" / "local-superlink" / "state.db"
    left = subprocess.run(["pgrep", "-f", f"flower-superlink.*--database {database}"], capture_output=True)
    assert left.returncode == 1, "the local SuperLink was left running"
