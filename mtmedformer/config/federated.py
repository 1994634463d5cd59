"""Federated section of the experiment config: rounds, strategy, client sampling and simulation partitions.

Plain data: the Flower adapters (``server/``, ``client/``) read it; the library never imports Flower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from mtmedformer.config.loader import FieldError, reject_non_finite
from mtmedformer.config.privacy import PrivacyConfig

STRATEGY_SETTINGS: dict[str, tuple[str, ...]] = {
    # The aggregation strategies ``federated.strategy`` accepts, and the settings each one reads, as key paths
    # below ``federated``. The server builds each from exactly these (server/strategy_factory.py, whose table of
    # builders must name the same strategies).
    "fedavg": (),
    "fedprox": ("strategy_options.proximal_mu",),
    "fedadam": ("strategy_options.server_lr", "strategy_options.beta_1", "strategy_options.beta_2",
                "strategy_options.tau"),
    "fedyogi": ("strategy_options.server_lr", "strategy_options.beta_1", "strategy_options.beta_2",
                "strategy_options.tau"),
    "fedavgm": ("strategy_options.server_lr", "strategy_options.server_momentum"),
    "fedmedian": (),
    "fedtrimmedavg": ("strategy_options.trim_beta",),
    "bnp_matching": ("matching",),
}

StrategyName = Literal[tuple(STRATEGY_SETTINGS)]  # the names of STRATEGY_SETTINGS, checked by the loader

# The strategies secure aggregation works with: their aggregate is the weighted mean of the updates, which is all
# the server learns. Every other strategy is refused at validation, with the reason below.
SECURE_AGGREGATION_STRATEGIES = ("fedavg", "fedprox")
SECURE_AGGREGATION_REFUSED = {
    "bnp_matching": "bnp_matching aligns the neurons of every site's model, so it needs each site's weights in the "
    "clear, which secure aggregation hides by design; use fedavg or fedprox for secure aggregation, or set "
    "secure_aggregation: false (federated.privacy.dp works with bnp_matching)",
    "fedmedian": "a coordinate-wise median needs every site's update, which secure aggregation hides; use fedavg "
    "or fedprox, or set secure_aggregation: false",
    "fedtrimmedavg": "a trimmed mean needs every site's update, which secure aggregation hides; use fedavg or "
    "fedprox, or set secure_aggregation: false",
}
SECURE_AGGREGATION_NOT_WIRED = (
    "is not wired for secure aggregation (its server optimizer would have to step on the securely aggregated mean); "
    "use fedavg or fedprox, or set secure_aggregation: false"
)


@dataclass(frozen=True)
class PartitionConfig:
    """How the simulation splits the configured data set into hospitals (ignored in deployment)."""

    scheme: Literal["site", "iid", "dirichlet", "quantity"] = "site"  # site = the data's own `site` column
    alpha: float = 0.5  # Dirichlet concentration for label/quantity skew (small = more skewed)
    seed: int = 0  # seed of the partition

    def __post_init__(self) -> None:
        reject_non_finite(self)
        if self.alpha <= 0:
            raise FieldError("alpha", f"must be > 0, got {self.alpha}")


@dataclass(frozen=True)
class StrategyOptions:
    """Options of Flower's strategies; each strategy reads only its own (:data:`STRATEGY_SETTINGS`)."""

    proximal_mu: float = 0.01  # FedProx: weight of the proximal term added to the local loss
    server_lr: float = 0.1  # FedAdam/FedYogi: server step size (eta); FedAvgM: server learning rate
    server_momentum: float = 0.9  # FedAvgM momentum
    beta_1: float = 0.9  # FedAdam/FedYogi first-moment decay
    beta_2: float = 0.99  # FedAdam/FedYogi second-moment decay
    tau: float = 1e-3  # FedAdam/FedYogi adaptivity (epsilon)
    trim_beta: float = 0.2  # FedTrimmedAvg: fraction trimmed at each end, in [0, 0.5)

    def __post_init__(self) -> None:
        reject_non_finite(self)
        if self.proximal_mu < 0:
            raise FieldError("proximal_mu", f"must be >= 0, got {self.proximal_mu}")
        for name in ("server_lr", "tau"):
            if getattr(self, name) <= 0:
                raise FieldError(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("server_momentum", "beta_1", "beta_2"):
            if not 0 <= getattr(self, name) < 1:
                raise FieldError(name, f"must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.trim_beta < 0.5:
            raise FieldError("trim_beta", f"must be in [0, 0.5), got {self.trim_beta}")


@dataclass(frozen=True)
class MatchingConfig:
    """Settings of Bayesian nonparametric neuron matching (``strategy: bnp_matching``).

    The one settings type of :func:`strategies.matching.match_and_merge` and of the ``federated.matching``
    section; ``docs/bnp-matching.md`` describes the model behind them.

    Attributes
    ----------
    prior_variance
        ``sigma0^2`` of the prior centred on the previous global model, in units of each tensor's noise
        variance: the prior weighs like ``1 / sigma0^2`` average clients (server step
        ``eta = J / (J + 1 / sigma0^2)``). Default inf: plain precision-weighted average. The one config value
        where ``+inf`` is accepted (it means "no prior"); NaN and ``-inf`` are rejected.
    iterations
        Leave-one-out re-alignment passes after the initial pass. Default 2.
    max_sweeps
        Cap on coordinate-ascent sweeps per alignment. Default 10.
    seed
        Seed of the client processing order. Default 0.
    noise
        ``"empirical"``: per-tensor noise variances from the spread of the aligned clients (SPAHM-style
        empirical Bayes), re-estimated every pass; ``"scale"``: each tensor's mean square in the reference.
        Default ``"empirical"``.
    noise_floor
        Floor of an empirical noise variance relative to the tensor's mean square. Default 1e-4.
    alignment
        ``"hard"``: every global unit takes one unit of each client (permutations). ``"sinkhorn"``: after the
        hard matching, each unit takes an entropic optimal-transport mixture of the client's units (soft
        alignment after Imfeld et al., ICLR 2024; :mod:`strategies.matching.soft`). Default ``"hard"``.
    sinkhorn_epsilon
        Entropic regularisation of the soft maps relative to each score matrix's spread (``> 0``; small =
        close to the hard map). Default 0.01: a unit whose match scores a fifth of the spread above each
        other unit gives about ``exp(-20)`` of its weight to each of them.
    sinkhorn_iterations
        Cap on Sinkhorn iterations per map. Default 500.

    Raises
    ------
    FieldError
        If a value is out of range (the config loader prefixes the key path).
    """

    prior_variance: float = math.inf
    iterations: int = 2
    max_sweeps: int = 10
    seed: int = 0
    noise: Literal["empirical", "scale"] = "empirical"
    noise_floor: float = 1e-4
    alignment: Literal["hard", "sinkhorn"] = "hard"
    sinkhorn_epsilon: float = 0.01
    sinkhorn_iterations: int = 500

    def __post_init__(self) -> None:
        reject_non_finite(self, allow_inf=("prior_variance",))
        if not self.prior_variance > 0:
            raise FieldError("prior_variance", f"must be > 0 (.inf = no prior), got {self.prior_variance}")
        if self.iterations < 0:
            raise FieldError("iterations", f"must be >= 0, got {self.iterations}")
        if self.max_sweeps < 1:
            raise FieldError("max_sweeps", f"must be >= 1, got {self.max_sweeps}")
        if self.noise not in ("empirical", "scale"):
            raise FieldError("noise", f"must be 'empirical' or 'scale', got {self.noise!r}")
        if not self.noise_floor > 0:
            raise FieldError("noise_floor", f"must be > 0, got {self.noise_floor}")
        if self.alignment not in ("hard", "sinkhorn"):
            raise FieldError("alignment", f"must be 'hard' or 'sinkhorn', got {self.alignment!r}")
        if not self.sinkhorn_epsilon > 0:
            raise FieldError("sinkhorn_epsilon", f"must be > 0, got {self.sinkhorn_epsilon}")
        if self.sinkhorn_iterations < 1:
            raise FieldError("sinkhorn_iterations", f"must be >= 1, got {self.sinkhorn_iterations}")


@dataclass(frozen=True)
class ScreeningConfig:
    """Bounds the server puts on every site's reply before it counts (``server/screening.py``).

    Attributes
    ----------
    max_examples_per_site
        Most samples one site may claim in a reply (``num-examples``, the FedAvg weight and the weight of its
        evaluation metrics); None = no declared maximum (a site's first claim is then pinned, but unbounded).
        Declare your largest site's image count: it caps how far one site can outweigh the others.
    outlier_factor
        A training update whose distance from the global model exceeds this many times the median distance of
        the other sites' updates of the round is an outlier; None = no such check. With a single site there is
        no other site to compare with and only the absolute bounds apply.
    on_outlier
        ``"reject"`` the outlier update, or ``"clip"`` it (scaled towards the global model down to that bound).
    max_abs_value
        Largest magnitude any float value of an update, of the aggregate or of a metric may have (finite but
        absurd values are rejected like NaN).
    max_integer_value
        Largest value an integer buffer (e.g. ``num_batches_tracked``) may hold; integer buffers must also not
        be below ``min(0, the global model's smallest value)``.

    Raises
    ------
    FieldError
        If a value is out of range (the config loader prefixes the key path).
    """

    max_examples_per_site: int | None = 1_000_000
    outlier_factor: float | None = 10.0
    on_outlier: Literal["reject", "clip"] = "reject"
    max_abs_value: float = 1e6
    max_integer_value: int = 2**53

    def __post_init__(self) -> None:
        if self.max_examples_per_site is not None and not self.max_examples_per_site >= 1:
            raise FieldError("max_examples_per_site", f"must be >= 1 or null, got {self.max_examples_per_site}")
        if self.outlier_factor is not None and not (math.isfinite(self.outlier_factor) and self.outlier_factor > 1):
            raise FieldError("outlier_factor", f"must be a finite number > 1 or null, got {self.outlier_factor}")
        if self.on_outlier not in ("reject", "clip"):
            raise FieldError("on_outlier", f"must be 'reject' or 'clip', got {self.on_outlier!r}")
        if not (math.isfinite(self.max_abs_value) and self.max_abs_value > 0):
            raise FieldError("max_abs_value", f"must be a finite number > 0, got {self.max_abs_value}")
        if not self.max_integer_value >= 1:
            raise FieldError("max_integer_value", f"must be >= 1, got {self.max_integer_value}")


@dataclass(frozen=True)
class FederatedConfig:
    """Federated training settings."""

    rounds: int = 5  # server rounds
    strategy: StrategyName = "fedavg"  # aggregation strategy
    local_epochs: int = 1  # local epochs per round at each site
    local_steps: int | None = None  # cap on local optimisation steps per round (None = whole epochs)
    fraction_train: float = 1.0  # fraction of connected sites sampled for training each round
    fraction_evaluate: float = 1.0  # fraction of connected sites sampled for evaluation each round
    min_train_nodes: int = 2  # a round proceeds only when at least this many sites replied to training
    min_evaluate_nodes: int = 2  # sampled for evaluation (at least)
    min_available_nodes: int = 2  # wait until this many sites are connected
    round_timeout_s: float = 3600.0  # how long the server waits for replies in one round
    client_threads: int = 1  # torch intra-op threads per client process (1 per simulated client)
    keep_optimizer_state: bool = False  # keep each site's optimizer state across rounds (in node state)
    server_evaluation: bool = False  # also evaluate the global model on the pooled test split at the server
    # After the last round, score the global model and every site's last local model on every site's test split
    # (cross_site.csv, a heat-map in the report). Opt-in: each site's weights are sent to the other sites.
    cross_site_evaluation: bool = False
    # Sites evaluate the received global before training on it: one message exchange per round instead of two
    # (round r's validation metrics arrive with round r + 1's updates; the last round evaluates separately).
    fused_evaluation: bool = False
    # Send model arrays as one contiguous array per dtype (a few Flower objects instead of one per tensor);
    # a pure transport setting: the same tensors arrive, and they are screened by name as before.
    pack_arrays: bool = True
    output_dir: str = "runs/federated"  # results of the run (a sub-folder per run)
    strategy_options: StrategyOptions = field(default_factory=StrategyOptions)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    screening: ScreeningConfig = field(default_factory=ScreeningConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)  # client-side DP, secure aggregation

    def __post_init__(self) -> None:
        reject_non_finite(self)
        for name in ("rounds", "local_epochs", "client_threads"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.local_steps is not None and self.local_steps < 1:
            raise FieldError("local_steps", f"must be >= 1 or null, got {self.local_steps}")
        for name in ("fraction_train", "fraction_evaluate"):
            if not 0 < getattr(self, name) <= 1:
                raise FieldError(name, f"must be in (0, 1], got {getattr(self, name)}")
        for name in ("min_train_nodes", "min_evaluate_nodes", "min_available_nodes"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.min_available_nodes < max(self.min_train_nodes, self.min_evaluate_nodes):
            raise FieldError(
                "min_available_nodes",
                f"({self.min_available_nodes}) must be >= min_train_nodes and min_evaluate_nodes",
            )
        if self.round_timeout_s <= 0:
            raise FieldError("round_timeout_s", f"must be > 0, got {self.round_timeout_s}")
        if self.privacy.secure_aggregation:
            self._check_secure_aggregation()

    def _check_secure_aggregation(self) -> None:
        """Secure aggregation needs a weighted-mean strategy and its own exchange per round."""
        if self.strategy not in SECURE_AGGREGATION_STRATEGIES:
            reason = SECURE_AGGREGATION_REFUSED.get(self.strategy, f"{self.strategy} {SECURE_AGGREGATION_NOT_WIRED}")
            raise FieldError("privacy.secure_aggregation", reason)
        if self.fused_evaluation:
            raise FieldError(
                "privacy.secure_aggregation",
                "cannot be combined with fused_evaluation (the SecAgg+ exchange carries no evaluation); set "
                "fused_evaluation: false",
            )
        if self.cross_site_evaluation:
            raise FieldError(
                "privacy.secure_aggregation",
                "cannot be combined with cross_site_evaluation (the server never sees one site's model to send "
                "to the others); set cross_site_evaluation: false",
            )

    def strategy_settings(self) -> dict[str, Any]:
        """The settings the configured strategy reads (:data:`STRATEGY_SETTINGS`), by the last part of their path.

        E.g. ``{"proximal_mu": 0.01}`` for ``fedprox``, ``{"matching": MatchingConfig(...)}`` for ``bnp_matching``.
        """
        out: dict[str, Any] = {}
        for path in STRATEGY_SETTINGS[self.strategy]:
            value: Any = self
            for part in path.split("."):
                value = getattr(value, part)
            out[path.rsplit(".", 1)[-1]] = value
        return out
