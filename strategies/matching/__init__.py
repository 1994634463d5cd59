"""Bayesian nonparametric neuron matching (PFNM/FedMA/SPAHM) for the multi-task ViT, framework-agnostic.

Works on state dicts of torch tensors (or numpy arrays) and never imports Flower; a Flower strategy calls
:func:`match_and_merge`. See ``docs/bnp-matching.md`` for the design and the sources.

Typical use::

    spec = build_spec(model)
    result = match_and_merge({"site-a": ClientUpdate(state_a, 120, {"segmentation": 120}), ...}, spec,
                             previous=global_state, config=MatchingConfig(prior_variance=math.inf))
    new_global = result.state_dict

With ``MatchingConfig(growth=True)`` MLP hidden units and decoder hidden channels may grow beyond the
clients' width (:mod:`strategies.matching.growth`); ``result.index_maps`` then says which global units each
client holds, and :func:`client_slice` cuts its configured-width model out of the grown global one.
"""

from strategies.matching.align import AlignResult, align
from strategies.matching.diagnostics import GroupStats, MergeDiagnostics
from strategies.matching.errors import MatchingError
from strategies.matching.merge import ClientUpdate, MatchingConfig, MergeResult, match_and_merge
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
from strategies.matching.widths import IndexMaps, client_slice, default_index_maps, growable_axes, widths_of

__all__ = [
    "AlignResult",
    "BlockTie",
    "ClientUpdate",
    "GroupStats",
    "IndexMaps",
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
    "client_slice",
    "compose",
    "default_index_maps",
    "growable_axes",
    "identity_permutations",
    "invert",
    "match_and_merge",
    "posterior_mean",
    "random_permutations",
    "server_step",
    "widths_of",
]
