"""End-to-end deployment on 127.0.0.1: TLS SuperLink, SuperNode authentication, ``flwr run``, refusal of strangers.

The processes and commands are those of ``docs/deployment.md`` and ``docker/`` (:mod:`tests.deploy.commands`).
"""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DeploymentFactory
from tests.deploy.harness import (
    CONNECTION,
    SCRIPTS,
    Deployment,
    flower_env,
    make_supernode_keys,
    start_deployment,
)

pytestmark = pytest.mark.slow

# The smallest experiment that still runs every task: one round, one local step, a depth-1 ViT on 32 px images.
# The sites' data comes from their SuperNodes' --node-config manifests, not from this file.
LOOPBACK_EXPERIMENT = {
    "data": {"source": "synthetic", "classes": ["benign", "malignant"], "image_size": 32, "augment": False},
    "model": {
        "preset": "tiny",
        "patch_size": 8,
        "depth": 1,
        "seg_feature_size": 4,
        "detection": {"feature_size": 4, "stride": 8},
    },
    "train": {"batch_size": 8, "lr": 0.001, "progress": False},
    "federated": {
        "rounds": 1,
        "local_steps": 1,
        "min_train_nodes": 2,
        "min_evaluate_nodes": 2,
        "min_available_nodes": 2,
    },
}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _train_rows(manifest: Path) -> int:
    with manifest.open(newline="", encoding="utf-8") as handle:
        return sum(row["split"] == "train" for row in csv.DictReader(handle))


def test_registered_supernodes_complete_a_run(
    deployment_factory: DeploymentFactory, site_manifests: dict[str, Path], tmp_path: Path
) -> None:
    # Prepare
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(yaml.safe_dump(LOOPBACK_EXPERIMENT), encoding="utf-8")
    results = tmp_path / "results"
    run_config = {"experiment": str(experiment), "output-dir": str(results), "run-name": "loopback"}
    deployment = deployment_factory(site_manifests, run_config=run_config)

    # Execute
    info = deployment.run(timeout=420)

    # Assert
    assert info.completed, f"run {info.run_id} ended {info.status}\n{info.server_log}\n{deployment.logs()}"
    assert info.details["fab-name"] == "mtmedformer-fl"
    assert deployment.node_status() == dict.fromkeys(deployment.node_ids.values(), "online")
    assert all(process.alive() for process in deployment.processes()), deployment.logs()
    # ---- RESULT CHECKS: what the ServerApp wrote (server/results.py); adapt when the result files change ----
    run_dir = results / "loopback"
    rounds = _jsonl(run_dir / "rounds.jsonl")
    assert [(row["round"], row["failures"]) for row in rounds] == [(1, 0)]
    assert _jsonl(run_dir / "failures.jsonl") == []
    trained = {row["site"]: row["num-examples"] for row in _jsonl(run_dir / "sites.jsonl") if row["phase"] == "train"}
    # Each SuperNode trained on the train split of the manifest named in its own --node-config.
    assert trained == {site: _train_rows(manifest) for site, manifest in site_manifests.items()}
    assert rounds[0]["train/num-examples"] == sum(trained.values())
    # ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded_deployment(
    tmp_path_factory: pytest.TempPathFactory, site_manifests: dict[str, Path]
) -> Iterator[Deployment]:
    """One registered site (site-a) plus an extra key pair, ``intruder``, that is never registered."""
    deployment = start_deployment(
        tmp_path_factory.mktemp("guarded"), {"site-a": site_manifests["site-a"]}, extra_keys=("intruder",)
    )
    yield deployment
    deployment.stop()


@pytest.mark.parametrize(
    ("use_key", "refusal"),
    [
        (True, "Failed to activate SuperNode"),  # a key the server operator never registered
        (False, "All SuperNodes must be registered"),  # no key at all
    ],
)
def test_unregistered_supernode_is_refused(
    guarded_deployment: Deployment, site_manifests: dict[str, Path], use_key: bool, refusal: str
) -> None:
    # Prepare
    deployment = guarded_deployment
    before = deployment.node_status()
    key = deployment.keys["intruder"] if use_key else None

    # Execute
    intruder = deployment.start_supernode("intruder", site_manifests["site-b"], key)
    exit_status = intruder.wait(timeout=60)

    # Assert
    assert exit_status != 0, intruder.log_text()
    assert refusal in intruder.log_text()
    assert deployment.node_status() == before
    assert before[deployment.node_ids["site-a"]] == "online"


def test_register_script_admits_a_site_that_joins_later(
    guarded_deployment: Deployment, site_manifests: dict[str, Path]
) -> None:
    # Prepare
    deployment = guarded_deployment
    key = make_supernode_keys(deployment.root / "late-keys", ["site-late"])["site-late"]
    known = set(deployment.node_status())

    # Execute
    registration = subprocess.run(
        ["bash", str(SCRIPTS / "register_supernodes.sh"), CONNECTION, f"{key}.pub"],
        env=flower_env(deployment.cli_home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert registration.returncode == 0, registration.stdout + registration.stderr  # no point starting it otherwise
    new_nodes = set(deployment.node_status()) - known
    deployment.keys["site-late"] = key
    deployment.node_ids["site-late"] = next(iter(new_nodes), -1)
    deployment.start_supernode("site-late", site_manifests["site-b"], key)
    deployment.wait_online(["site-late"], timeout=90)

    # Assert
    assert len(new_nodes) == 1
    assert deployment.node_status()[deployment.node_ids["site-late"]] == "online"
