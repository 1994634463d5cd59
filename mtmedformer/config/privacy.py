"""Privacy section of the federated config (``federated.privacy``): site-side differential privacy, secure aggregation.

Plain data, validated once when the config is read. ``docs/privacy.md`` says what each option protects and what
it does not; the mechanism is :func:`mtmedformer.privacy.clip_and_noise` (run at every site), the privacy budget
is accounted by ``server/privacy.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mtmedformer.config.loader import FieldError, reject_non_finite


@dataclass(frozen=True)
class DPConfig:
    """Client-side differential privacy: each site clips its model update and adds Gaussian noise before replying.

    The update is ``local - global`` over every floating-point tensor of the model's state (parameters and float
    buffers together, one L2 norm); integer buffers are sent unchanged.

    Attributes
    ----------
    clip_norm
        L2 bound ``C`` of a site's update; larger updates are scaled down to norm ``C``. Units of the weights.
        Default 1.0.
    noise_multiplier
        ``z``: every coordinate of the clipped update gets ``N(0, (z * C)^2)`` noise. 0 clips without noise
        (no privacy guarantee, epsilon reported as null). Default 1.0.
    delta
        The ``delta`` of the reported ``(epsilon, delta)`` guarantee, in (0, 1); pick it below one over the
        number of records a site holds. Default 1e-5.

    Raises
    ------
    FieldError
        If a value is out of range or not finite (the config loader prefixes the key path).
    """

    clip_norm: float = 1.0
    noise_multiplier: float = 1.0
    delta: float = 1e-5

    def __post_init__(self) -> None:
        reject_non_finite(self)
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise FieldError("clip_norm", f"must be a finite number > 0, got {self.clip_norm}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise FieldError("noise_multiplier", f"must be a finite number >= 0, got {self.noise_multiplier}")
        if not (math.isfinite(self.delta) and 0 < self.delta < 1):
            raise FieldError("delta", f"must be in (0, 1), e.g. 1e-5, got {self.delta}")


@dataclass(frozen=True)
class SecAggConfig:
    """Settings of Flower's SecAgg+ protocol (``federated.privacy.secure_aggregation: true``).

    Each site sends its update ``local - global`` scaled by ``num-examples / max_weight``, quantised in
    ``[-clipping_range, clipping_range]`` to ``2^22`` levels and masked; the server learns only the weighted mean.

    Attributes
    ----------
    num_shares
        Fraction of the sampled sites each site shares its secret with (1.0 = all). Default 1.0.
    reconstruction_threshold
        Fraction of those shares needed to unmask (dropped sites are recovered from the others). Default 0.67.
    max_weight
        Upper bound of a site's ``num-examples``; a site with more refuses the round. The smaller, the finer the
        quantisation of the weighted update. Default 1000.
    clipping_range
        Bound of every coordinate of ``num-examples / max_weight * update``; a site whose update exceeds it
        refuses the round (with DP noise, allow several noise standard deviations). The smaller, the finer the
        quantisation. Default 8.0.

    Raises
    ------
    FieldError
        If a value is out of range or not finite.
    """

    num_shares: float = 1.0
    reconstruction_threshold: float = 0.67
    max_weight: float = 1000.0
    clipping_range: float = 8.0

    def __post_init__(self) -> None:
        reject_non_finite(self)
        for name in ("num_shares", "reconstruction_threshold"):
            if not 0 < getattr(self, name) <= 1:
                raise FieldError(name, f"must be a fraction in (0, 1], got {getattr(self, name)}")
        for name in ("max_weight", "clipping_range"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise FieldError(name, f"must be a finite number > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class PrivacyConfig:
    """Privacy options of a federated run (all off by default).

    Attributes
    ----------
    dp
        Client-side differential privacy (:class:`DPConfig`); null (the default) = off.
    secure_aggregation
        Flower's SecAgg+: the server learns only the weighted mean of the sites' updates, never one site's.
        For the averaging strategies ``fedavg`` and ``fedprox``; the config is refused for any other (``federated.py``
        says why). Default false.
    secagg
        The protocol's settings (:class:`SecAggConfig`).
    """

    dp: DPConfig | None = None
    secure_aggregation: bool = False
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
