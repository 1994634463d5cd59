"""Client-side differential privacy of one model update: clip its L2 norm, add Gaussian noise.

The Gaussian mechanism of DP-FedAvg (McMahan et al., ICLR 2018) run at the site itself, so that nothing the
site sends is free of noise: the update ``local - reference`` over every floating-point tensor is scaled to L2
norm at most ``clip_norm`` (one norm over all tensors, the "flat clipping" of that paper), then every coordinate
gets independent ``N(0, (noise_multiplier * clip_norm)^2)`` noise. Integer tensors (e.g. step counters) are
returned unchanged. The accounting of the resulting privacy budget is ``server/privacy.py``'s.

The noise must be unknown to the server: by default it is drawn from a generator seeded from the operating
system's entropy pool, never from the run's seed (which the server knows and sends).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrivateUpdate:
    """A model state whose update was clipped and noised.

    Attributes
    ----------
    state
        ``reference + clip(local - reference) + noise``, tensor by tensor, same keys, dtypes and shapes as
        ``local``.
    norm
        L2 norm of the update before clipping (stays at the site: it is not privatised and must not be sent).
    scale
        The factor the update was multiplied by, ``min(1, clip_norm / norm)``.
    """

    state: dict[str, torch.Tensor]
    norm: float
    scale: float


def secret_generator() -> torch.Generator:
    """A CPU generator seeded from the operating system's entropy pool (not reproducible, on purpose)."""
    return torch.Generator().manual_seed(secrets.randbits(63))


def clip_and_noise(
    local: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor],
    clip_norm: float,
    noise_multiplier: float,
    generator: torch.Generator | None = None,
) -> PrivateUpdate:
    """Clip ``local - reference`` to L2 norm ``clip_norm``, add Gaussian noise of std ``noise_multiplier * clip_norm``.

    Parameters
    ----------
    local
        The site's model state after local training (CPU tensors).
    reference
        The global model state the site received (same keys and shapes).
    clip_norm
        L2 bound of the update over all floating-point tensors together, > 0.
    noise_multiplier
        Noise std in units of ``clip_norm``, >= 0 (0: clipping only).
    generator
        Source of the noise; default :func:`secret_generator` (tests pass a seeded one).

    Returns
    -------
    PrivateUpdate
        The privatised state, the update's norm before clipping and the scale applied.

    Raises
    ------
    ValueError
        If the two states have different keys or shapes, or ``clip_norm``/``noise_multiplier`` are out of range.
    """
    in_range = math.isfinite(clip_norm) and clip_norm > 0 and math.isfinite(noise_multiplier) and noise_multiplier >= 0
    if not in_range:
        raise ValueError(f"clip_norm must be > 0 and noise_multiplier >= 0, got {clip_norm} and {noise_multiplier}")
    if list(local) != list(reference):
        raise ValueError("the local and reference model states have different tensor names")
    floats = [k for k, v in local.items() if v.is_floating_point()]
    updates: dict[str, torch.Tensor] = {}
    for key in floats:
        if local[key].shape != reference[key].shape:
            raise ValueError(f"{key}: local shape {tuple(local[key].shape)} != reference {tuple(reference[key].shape)}")
        updates[key] = local[key].double() - reference[key].double()
    norm = math.sqrt(sum(float(u.square().sum()) for u in updates.values()))
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    std = noise_multiplier * clip_norm
    generator = generator or secret_generator()
    state = dict(local)
    for key, update in updates.items():
        noised = update * scale
        if std > 0:
            noised += std * torch.randn(update.shape, generator=generator, dtype=torch.float64)
        state[key] = (reference[key].double() + noised).to(local[key].dtype)
    return PrivateUpdate(state=state, norm=norm, scale=scale)
