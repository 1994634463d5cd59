"""The exception the matching core raises on inconsistent inputs (spec, state dicts, counts)."""

from __future__ import annotations

from mtmedformer.errors import MTMedFormerError


class MatchingError(MTMedFormerError, ValueError):
    """A permutation spec, a client state dict or a sample count is inconsistent; the message names it."""
