"""Partially annotated clients of the task-split part: each training annotation withheld independently."""

import copy
import dataclasses

import pytest

from benchmarks.fl_comparison.common import base_experiment, build_config, site_splits
from benchmarks.fl_comparison.task_split import partial_clients, withhold_annotations


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    cache = tmp_path_factory.mktemp("synthetic")
    return build_config(base_experiment(True, str(cache)), federated={"partition": {"scheme": "iid", "seed": 0}})


def _annotated(dataset):
    return [(r.label is not None, r.masks is not None, r.boxes is not None) for r in dataset.records]


def test_nothing_withheld_keeps_every_annotation(cfg):
    # Prepare
    train = site_splits(cfg, 4)[0].train
    # Execute
    kept = withhold_annotations(train, 0.0, seed=0)
    # Assert
    assert _annotated(kept) == _annotated(train)


def test_everything_withheld_removes_every_annotation_and_leaves_the_source_intact(cfg):
    # Prepare
    train = site_splits(cfg, 4)[0].train
    before = _annotated(train)
    # Execute
    kept = withhold_annotations(train, 1.0, seed=0)
    # Assert
    assert all(flags == (False, False, False) for flags in _annotated(kept))
    assert _annotated(train) == before


def test_draws_are_seeded_and_differ_between_clients(cfg):
    # Prepare
    train = site_splits(cfg, 4)[0].train
    # Execute
    first, again, other = (withhold_annotations(train, 0.5, seed=s) for s in (0, 0, 1))
    # Assert
    assert _annotated(first) == _annotated(again)
    assert _annotated(first) != _annotated(other)


def test_partial_clients_keep_validation_and_test_fully_annotated(cfg):
    # Execute
    clients = partial_clients(cfg, 0.5)
    full = site_splits(cfg, 4)
    # Assert
    assert [c.name for c in clients] == ["partial-0", "partial-1", "partial-2", "partial-3"]
    for client, source in zip(clients, full, strict=True):
        assert _annotated(client.test) == _annotated(source.test)
        assert sum(map(sum, _annotated(client.train))) < sum(map(sum, _annotated(source.train)))


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_a_fraction_outside_zero_one_is_refused(cfg, fraction):
    # Prepare
    train = site_splits(cfg, 4)[0].train
    # Execute / Assert
    with pytest.raises(ValueError, match="withheld fraction must be in"):
        withhold_annotations(train, fraction, seed=0)


def test_boxes_derived_from_masks_are_refused(cfg):
    # Prepare: one record whose boxes come from its mask (on a copy: the split may be shared)
    train = copy.copy(site_splits(cfg, 4)[0].train)
    train.records = [dataclasses.replace(train.records[0], boxes_from_mask=True), *train.records[1:]]
    # Execute / Assert
    with pytest.raises(ValueError, match="boxes come from the mask"):
        withhold_annotations(train, 0.5, seed=0)
