"""The privacy budget of a run with client-side DP (``federated.privacy.dp``), by Flower's RDP accountant.

Every round a site that trains releases one output of the Gaussian mechanism of
:func:`mtmedformer.privacy.clip_and_noise`: its update clipped to L2 norm ``C`` plus ``N(0, (z C)^2)`` noise per
coordinate. The guarantee reported is the one **against the server** (which sees each site's update):

- neighbouring data sets: the site's data and *any* other data set of that site (one patient changed, or all);
  both clipped updates lie in the ball of radius ``C``, so the L2 sensitivity is ``2 C``
  (:data:`SENSITIVITY_IN_CLIP_NORMS`) and the mechanism is a Gaussian one of noise multiplier ``z / 2``;
- no amplification by sampling: the server chooses which sites train, so it knows who took part;
- composition over the rounds the site took part in (at most one release per round), by Rényi DP
  (Mironov, CSF 2017) through ``flwr.supercore.privacy_accounting.rdp_accountant`` (``flwr[dp]``,
  Google's ``dp-accounting``).

Whoever sees only global models (other sites, users of the final model) learns no more (post-processing). The
metrics a site sends (losses, counts) are not privatised.
"""

from __future__ import annotations

import math

from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting import PrivacyConfig as AccountingConfig
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from mtmedformer.config.privacy import DPConfig, PrivacyConfig

SENSITIVITY_IN_CLIP_NORMS = 2.0  # L2 distance of two updates in the ball of radius C, in units of C
EPSILON = "privacy/epsilon"  # round-row keys (rounds.jsonl)
DELTA = "privacy/delta"
NOISE_MULTIPLIER = "privacy/noise_multiplier"
CLIP_NORM = "privacy/clip_norm"


def site_epsilon(dp: DPConfig, releases: int) -> float:
    """Epsilon at ``dp.delta`` of a site after ``releases`` noisy updates; ``inf`` without noise, 0 before any.

    Raises
    ------
    ValueError
        If ``releases`` is negative.
    """
    if releases < 0:
        raise ValueError(f"releases must be >= 0, got {releases}")
    if releases == 0:
        return 0.0
    if dp.noise_multiplier == 0:
        return math.inf
    accountant = RdpAccountant(
        AccountingConfig(
            target_delta=dp.delta,
            population_size=1,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    event = GaussianPrivacyEvent(
        noise_multiplier=dp.noise_multiplier / SENSITIVITY_IN_CLIP_NORMS, sample_size=1, population_size=1
    )
    accountant.compose(event, count=releases)
    return float(accountant.get_epsilon(dp.delta))


def round_privacy(privacy: PrivacyConfig, completed_rounds: int) -> dict[str, float]:
    """The privacy figures of a run after ``completed_rounds`` rounds, for its round rows (empty without DP).

    ``privacy/epsilon`` bounds every site: a site releases at most one update per round. It is ``inf`` (``null``
    in the JSON files) when the noise multiplier is 0: clipping alone gives no guarantee.
    """
    if privacy.dp is None:
        return {}
    return {
        EPSILON: site_epsilon(privacy.dp, completed_rounds),
        DELTA: privacy.dp.delta,
        NOISE_MULTIPLIER: privacy.dp.noise_multiplier,
        CLIP_NORM: privacy.dp.clip_norm,
    }


def privacy_summary(privacy: PrivacyConfig, completed_rounds: int) -> dict[str, str]:
    """The report's headline line on privacy: the mechanism and the epsilon spent (empty without DP)."""
    if privacy.dp is None:
        return {}
    dp = privacy.dp
    epsilon = site_epsilon(dp, completed_rounds)
    spent = f"epsilon {epsilon:.3g} at delta {dp.delta:g}" if math.isfinite(epsilon) else "no guarantee (no noise)"
    return {
        "client-side DP (per site, against the server)": (
            f"{spent} after {completed_rounds} rounds; clip norm {dp.clip_norm:g}, noise multiplier "
            f"{dp.noise_multiplier:g}"
        )
    }
