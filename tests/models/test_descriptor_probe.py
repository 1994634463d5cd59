"""The descriptor probe: an exact L2-regularised logistic fit that respects the other logits (offset)."""

import pytest
import torch

from mtmedformer.models.classification import DescriptorProbe


def _separable(n=200, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    descriptors = torch.randn(n, 6, generator=generator) + 3.0 * labels[:, None] * torch.tensor([1.0, 0, 0, 0, 0, 0])
    return descriptors, labels


def test_an_unfitted_probe_adds_nothing():
    probe = DescriptorProbe(6, 2)
    assert torch.equal(probe(torch.randn(5, 6)), torch.zeros(5, 2))


def test_fit_separates_the_classes_on_the_informative_descriptor():
    # Prepare
    descriptors, labels = _separable()
    probe = DescriptorProbe(6, 2)
    # Execute
    loss = probe.fit(descriptors, labels, torch.zeros(len(labels), 2))
    # Assert
    accuracy = float((probe(descriptors).argmax(1) == labels).float().mean())
    assert loss < 0.3 and accuracy > 0.9
    margin = probe.weight[1] - probe.weight[0]
    assert float(margin[0]) > 5 * float(margin[1:].abs().max())  # the informative descriptor dominates


def test_fit_explains_only_what_the_offset_leaves():
    # Prepare: the other logits already classify every sample confidently
    descriptors, labels = _separable()
    offset = torch.nn.functional.one_hot(labels, 2).float() * 20.0
    probe = DescriptorProbe(6, 2)
    # Execute
    probe.fit(descriptors, labels, offset)
    # Assert: nothing left to explain, the L2 penalty keeps the probe near zero
    assert float(probe.weight.abs().max()) < 0.05


def test_fit_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected descriptors"):
        DescriptorProbe(6, 2).fit(torch.randn(4, 6), torch.zeros(3, dtype=torch.long), torch.zeros(4, 2))
