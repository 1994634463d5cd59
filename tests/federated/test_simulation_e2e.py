"""End to end: `scripts/simulate.sh` (what `make run` calls) runs `flwr run .` on the Ray simulation backend.

One of the three simulated hospitals is made to fail in round 1: the round completes with the other two,
the failure is recorded, and the script stops the local SuperLink it started.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.federated.conftest import TINY_EXPERIMENT

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_simulation_with_a_failing_client_completes_and_cleans_up(tmp_path, synthetic_cache):
    # Prepare
    experiment = {**TINY_EXPERIMENT, "data": {**TINY_EXPERIMENT["data"], "synthetic": {
        **TINY_EXPERIMENT["data"]["synthetic"], "cache_dir": str(synthetic_cache)}}}
    experiment["federated"] = {**TINY_EXPERIMENT["federated"], "min_available_nodes": 3, "min_train_nodes": 2,
                               "min_evaluate_nodes": 2}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    runs = tmp_path / "runs"
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"), "MTMEDFORMER_RUNS": str(runs),
           "VENV": str(Path(sys.executable).parent.parent)}
    # Execute
    done = subprocess.run(
        ["bash", "scripts/simulate.sh", str(path), "3", "--run-config", "fault-partition=1 fault-round=1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
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
    database = tmp_path / "flwr-home" / "local-superlink" / "state.db"
    left = subprocess.run(["pgrep", "-f", f"flower-superlink.*--database {database}"], capture_output=True)
    assert left.returncode == 1, "the local SuperLink was left running"
