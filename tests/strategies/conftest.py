"""Fixtures shared by the matching tests: each module defines ``model``; these derive its spec and weights."""

import pytest

from strategies.matching import build_spec


@pytest.fixture(scope="module")
def spec(model):
    return build_spec(model)


@pytest.fixture(scope="module")
def base(model):
    return {k: v.clone() for k, v in model.state_dict().items()}
