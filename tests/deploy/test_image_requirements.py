"""docker/image_requirements.py: what the images install after torch (no torch re-resolution, no Ray)."""

from __future__ import annotations

import importlib.util
import tomllib

import pytest

from tests.deploy.harness import REPO_ROOT

_spec = importlib.util.spec_from_file_location("image_requirements", REPO_ROOT / "docker" / "image_requirements.py")
assert _spec is not None and _spec.loader is not None
image_requirements = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(image_requirements)


def test_the_projects_dependencies_minus_torch_and_the_simulation_extra() -> None:
    # Prepare
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    declared = tomllib.loads(text)["project"]["dependencies"]

    # Execute
    lines = image_requirements.image_requirements(text)

    # Assert
    names = [line.split("[")[0].split("=")[0].split(">")[0].split("<")[0] for line in lines]
    assert "torch" not in names and "torchvision" not in names
    assert "flwr[dp]==1.42.0" in lines, lines  # the simulation extra (Ray) dropped, dp kept
    assert len(lines) == len(declared) - 2  # everything else is kept as declared
    assert all(line in declared for line in lines if not line.startswith("flwr"))


def test_extras_and_markers_are_kept_apart_from_the_dropped_extra() -> None:
    text = '[project]\ndependencies = ["flwr[simulation, dp]>=1.42; python_version >= \'3.10\'", "Torch==2.13.0"]\n'
    assert image_requirements.image_requirements(text) == ["flwr[dp]>=1.42; python_version >= '3.10'"]


@pytest.mark.parametrize("text", ["[project]\nname = 'x'\n", "[project]\ndependencies = []\n", ""])
def test_a_pyproject_without_dependencies_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"no \[project\] dependencies"):
        image_requirements.image_requirements(text)


def test_the_command_names_a_missing_file(tmp_path, capsys) -> None:
    assert image_requirements.main([str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err
