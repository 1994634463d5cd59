"""The app bundle (FAB) that ``flwr run`` ships: the apps' code and configs, nothing else, and it loads."""

from __future__ import annotations

import io
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from tests.deploy.harness import REPO_ROOT, copy_app


def test_the_bundle_ships_the_app_packages_and_configs_only(tmp_path: Path):
    # Prepare: build from the same snapshot of the checkout the loopback test submits
    app = copy_app(REPO_ROOT, tmp_path / "app")
    # Execute
    names = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(app))).namelist()
    # Assert
    top = {name.split("/")[0] for name in names}
    assert top == {"client", "server", "strategies", "mtmedformer", "configs", "pyproject.toml", "README.md", ".info"}
    assert "configs/federated_demo.yaml" in names and "client/app.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/", "docker/", "scripts/")) for n in names)


def test_the_apps_import_from_the_unpacked_bundle_alone(tmp_path: Path):
    # Prepare: unpack the bundle where nothing else of the checkout is importable
    bundle = tmp_path / "bundle"
    zipfile.ZipFile(io.BytesIO(build_fab_from_disk(copy_app(REPO_ROOT, tmp_path / "app")))).extractall(bundle)
    components = tomllib.loads((bundle / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["components"]
    # Execute: import both components' modules the way Flower's loader does (app folder on sys.path)
    # (the editable install would also find the checkout: every project module must come from the bundle)
    code = (
        "import importlib, os, sys\n"
        "for ref in sys.argv[1:]: importlib.import_module(ref.split(':')[0])\n"
        "ours = ('client', 'server', 'strategies', 'mtmedformer')\n"
        "outside = [n for n, m in sys.modules.items() if n.split('.')[0] in ours\n"
        "           and not os.path.realpath(getattr(m, '__file__', None) or os.getcwd()).startswith(os.getcwd())]\n"
        "sys.exit(f'imported from outside the bundle: {outside}' if outside else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, components["serverapp"], components["clientapp"]],
        cwd=bundle, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(bundle), "PATH": "/usr/bin:/bin", "FLWR_TELEMETRY_ENABLED": "0"},
    )
    # Assert
    assert result.returncode == 0, result.stderr[-2000:]
