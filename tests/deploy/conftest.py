"""Fixtures of the deployment tests: per-site synthetic data and deployments that are always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.harness import Deployment, demo_sites, start_deployment

DeploymentFactory = Callable[..., Deployment]


@pytest.fixture(scope="module")
def site_manifests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny synthetic sites, each a folder with its own manifest.csv (``docker/demo_data.py``)."""
    return demo_sites(tmp_path_factory.mktemp("sites"), num_sites=2, images_per_site=6, image_size=32)


@pytest.fixture
def deployment_factory(tmp_path: Path) -> Iterator[DeploymentFactory]:
    """``factory(sites, run_config=None, **kwargs) -> Deployment``; every deployment is stopped at teardown."""
    started: list[Deployment] = []

    def factory(sites: Mapping[str, Path], run_config: Mapping[str, Any] | None = None, **kwargs: Any) -> Deployment:
        deployment = start_deployment(tmp_path / f"deployment-{len(started)}", sites, run_config, **kwargs)
        started.append(deployment)
        return deployment

    yield factory
    for deployment in started:
        deployment.stop()
