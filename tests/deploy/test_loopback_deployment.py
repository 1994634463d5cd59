"""End-to-end deployment on 127.0.0.1: TLS SuperLink, SuperNode authentication, ``flwr run``, refusal of strangers.

The processes and commands are those of ``docs/deployment.md`` and ``docker/`` (:mod:`tests.deploy.commands`).
"""

from __future__ import annotations

import csv
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mtmedformer.config import config_from_dict
from mtmedformer.config.privacy import DPConfig
from server.app import initial_state
from server.privacy import EPSILON, site_epsilon
from server.state import ServerState
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


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory, site_manifests: dict[str, Path]) -> Iterator[Deployment]:
    """Both sites registered and online; the runs of this module share it (a deployment takes minutes to start)."""
    deployment = start_deployment(tmp_path_factory.mktemp("two-sites"), site_manifests)
    yield deployment
    deployment.stop()


def _run_config(tmp_path: Path, experiment: dict, name: str) -> dict[str, str]:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment), encoding="utf-8")
    return {"experiment": str(path), "output-dir": str(tmp_path / "results"), "run-name": name}


def test_registered_supernodes_complete_a_run(
    two_sites: Deployment, site_manifests: dict[str, Path], tmp_path: Path
) -> None:
    # Prepare
    results = tmp_path / "results"
    deployment = two_sites
    federated = {**LOOPBACK_EXPERIMENT["federated"], "cross_site_evaluation": True}
    experiment = {**LOOPBACK_EXPERIMENT, "federated": federated}

    # Execute
    info = deployment.run(timeout=420, run_config=_run_config(tmp_path, experiment, "loopback"))

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
    # Cross-site evaluation: the global and both sites' local models, each scored on both sites' test splits.
    with (run_dir / "cross_site.csv").open(newline="", encoding="utf-8") as handle:
        pairs = {(row["model"], row["site"]) for row in csv.DictReader(handle)}
    sites = sorted(site_manifests)
    assert pairs == {(model, site) for model in ["global", *sites] for site in [*sites, "aggregate"]}
    # ----------------------------------------------------------------------------------------------------------


def test_dp_with_secure_aggregation_runs_deployed(two_sites: Deployment, tmp_path: Path) -> None:
    # Prepare: noise far above the clipped update (C = 0.01 in norm, z C = 0.01 per coordinate)
    dp = DPConfig(clip_norm=0.01, noise_multiplier=1.0)
    privacy = {"dp": {"clip_norm": dp.clip_norm, "noise_multiplier": dp.noise_multiplier},
               "secure_aggregation": True, "secagg": {"max_weight": 20, "clipping_range": 1.0}}
    federated = {**LOOPBACK_EXPERIMENT["federated"], "privacy": privacy, "round_timeout_s": 240.0}
    experiment = {**LOOPBACK_EXPERIMENT, "federated": federated}

    # Execute
    info = two_sites.run(timeout=420, run_config=_run_config(tmp_path, experiment, "private"))

    # Assert
    assert info.completed, f"run {info.run_id} ended {info.status}\n{info.server_log}\n{two_sites.logs()}"
    run_dir = tmp_path / "results" / "private"
    rounds = _jsonl(run_dir / "rounds.jsonl")
    assert [(row["round"], row["failures"], row["sites_trained"]) for row in rounds] == [(1, 0, 2)]
    assert rounds[0][EPSILON] == pytest.approx(site_epsilon(dp, 1))
    # The global moved by the weighted mean of the sites' noise: per-coordinate RMS z C sqrt(sum_k w_k^2).
    trained = [row["num-examples"] for row in _jsonl(run_dir / "sites.jsonl") if row["phase"] == "train"]
    weights = np.array(trained) / sum(trained)
    cfg = config_from_dict(experiment)
    initial = initial_state(cfg).global_state
    final = ServerState.load(run_dir / "server_state.pt").global_state
    moved = torch.cat([(final[k].double() - initial[k].double()).ravel() for k in initial
                       if initial[k].is_floating_point()])
    expected = dp.noise_multiplier * dp.clip_norm * float(np.sqrt(np.sum(weights**2)))
    assert float(moved.square().mean().sqrt()) == pytest.approx(expected, rel=0.05)


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
