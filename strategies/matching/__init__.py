"""Bayesian nonparametric neuron matching (PFNM/FedMA/SPAHM) for the multi-task ViT, framework-agnostic.

Works on state dicts of torch tensors (or numpy arrays) and never imports Flower; a Flower strategy calls
:func:`match_and_merge`. See ``docs/bnp-matching.md`` for the design and the sources.

Typical use::

    spec = build_spec(model)
    result = match_and_merge({"site-a": ClientUpdate(state_a, 120, {"segmentation": 120}), ...}, spec,
                             previous=global_state, config=MatchingConfig(prior_variance=math.inf))
    new_global = result.state_dict

:class:`MatchingConfig` is the settings type of the ``federated.matching`` config section
(:mod:`mtmedformer.config.federated`), re-exported here. Every global unit is matched to one unit of every
client (fixed width, PFNM without new units: ``docs/decisions/005-matching-growth.md`` says why).
"""

from mtmedformer.config.federated import MatchingConfig
from strategies.matching.align import AlignResult, align
from strategies.matching.diagnostics import GroupStats, MergeDiagnostics
from strategies.matching.errors import MatchingError
from strategies.matching.merge import ClientUpdate, MergeResult, match_and_merge
from strategies.matching.model_spec import build_spec
from strategies.matching.permute import (
    Perms,
    apply_permutations,
    compose,
    identity_permutations,
    invert,
    random_permutations,
)
from strategies.matching.posterior import posterior_mean, server_step
from strategies.matching.spec import BlockTie, PermutationSpec, Segment, SpecBuilder

__all__ = [
    "AlignResult",
    "BlockTie",
    "ClientUpdate",
    "GroupStats",
    "MatchingConfig",
    "MatchingError",
    "MergeDiagnostics",
    "MergeResult",
    "Perms",
    "PermutationSpec",
    "Segment",
    "SpecBuilder",
    "align",
    "apply_permutations",
    "build_spec",
    "compose",
    "identity_permutations",
    "invert",
    "match_and_merge",
    "posterior_mean",
    "random_permutations",
    "server_step",
]
