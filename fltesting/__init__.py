"""Test harness for the Flower apps: an in-process grid and fault injection. Not part of the shipped apps.

Neither the app bundle (``fab-include`` in pyproject.toml) nor the wheel (``[tool.hatch.build.targets.wheel]``)
contains this package: the SuperLink, SuperNodes and ClientApps of a simulation or deployment never see it.
Tests and the research scripts in ``benchmarks/`` import it from the repository root (both run from there).
"""
