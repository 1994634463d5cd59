"""Per-site acquisition: each synthetic hospital has its own detector look and its own case mix.

Real multi-centre data differ by site in two ways that matter for federated learning: the images
look different (detector response curve, contrast, noise, sharpness, bit depth) and the class
prevalence differs (screening versus referral populations). :func:`site_profiles` gives every site
a fixed, distinct profile; :func:`acquire` turns an ideal ``[0, 1]`` density image into that site's
stored pixel values.

The parameter ranges are illustrative, chosen so that sites are visibly different while every
site's images remain readable; they are not measured from any real scanner. Site ``k`` takes the
value ``(0.5 + k * step) mod 1`` of a low-discrepancy sequence per parameter (a different irrational
``step`` each), so any number of sites gets well-spread, deterministic, seed-independent settings
and site ``0`` sits in the middle of every range.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Irrational steps of the per-parameter low-discrepancy sequences (fractional parts of sqrt/golden ratios);
# distinct steps decorrelate the parameters across sites.
_STEPS = {
    "prevalence": 0.6180340,  # golden ratio
    "gamma": 0.4142136,  # sqrt(2) - 1
    "contrast": 0.7320508,  # sqrt(3) - 1
    "offset": 0.2360680,  # sqrt(5) - 2
    "noise": 0.6457513,  # sqrt(7) - 2
    "blur": 0.8284271,  # sqrt(8) - 2
}
REFERENCE_SIZE = 128  # blur sigmas are given at this image size and scaled with the actual size
MAX_12_BIT = 4095  # 16-bit sites store 12-bit detector values, as many mammography units do


@dataclass(frozen=True)
class SiteProfile:
    """The acquisition settings and case mix of one synthetic site.

    Attributes
    ----------
    name
        Site name written to the manifest, ``"site-a"``, ``"site-b"``, ...
    index
        Position of the site, ``0``-based.
    prevalence
        Probability that a case is positive: ``P(malignant | mass)`` for mammography,
        ``P(pneumonia)`` for chest X-ray. Ranges over ``[0.2, 0.8]``.
    gamma
        Exponent of the detector response curve ``I -> I ** gamma``, in ``[0.7, 1.5]``.
    contrast
        Scale of the stored intensity range, in ``[0.7, 1.0]``.
    offset
        Stored value of zero density (detector dark level), in ``[0.02, 0.10]``.
    noise
        Standard deviation of the additive quantum-like noise at full signal, in ``[0.01, 0.04]``.
    blur
        Gaussian sigma of the detector's blur at 128 px, pixels, in ``[0, 0.9]``.
    bit_depth
        ``8`` or ``16`` (16-bit PNG holding 12-bit values).
    """

    name: str
    index: int
    prevalence: float
    gamma: float
    contrast: float
    offset: float
    noise: float
    blur: float
    bit_depth: int


def site_name(index: int) -> str:
    """Return ``"site-a"`` for 0, ..., ``"site-z"`` for 25, ``"site-aa"`` for 26, and so on."""
    letters = ""
    n = index + 1
    while n > 0:
        n, rem = divmod(n - 1, 26)
        letters = string.ascii_lowercase[rem] + letters
    return f"site-{letters}"


def _spread(index: int, parameter: str) -> float:
    """Value in ``[0, 1)`` of site ``index`` in the low-discrepancy sequence of ``parameter``."""
    return (0.5 + index * _STEPS[parameter]) % 1.0


def site_profiles(num_sites: int, sixteen_bit: bool = True) -> list[SiteProfile]:
    """Return the fixed profiles of sites ``0 .. num_sites - 1``.

    Parameters
    ----------
    num_sites
        Number of sites, ``>= 1``.
    sixteen_bit
        When true and there are at least two sites, site ``1`` (``"site-b"``) stores 16-bit PNGs.

    Raises
    ------
    ValueError
        If ``num_sites < 1``.
    """
    if num_sites < 1:
        raise ValueError(f"num_sites must be >= 1, got {num_sites}")
    profiles = []
    for k in range(num_sites):
        profiles.append(
            SiteProfile(
                name=site_name(k),
                index=k,
                prevalence=0.2 + 0.6 * _spread(k, "prevalence"),
                gamma=0.7 + 0.8 * _spread(k, "gamma"),
                contrast=0.7 + 0.3 * _spread(k, "contrast"),
                offset=0.02 + 0.08 * _spread(k, "offset"),
                noise=0.01 + 0.03 * _spread(k, "noise"),
                blur=0.9 * _spread(k, "blur"),
                bit_depth=16 if sixteen_bit and k == 1 else 8,
            )
        )
    return profiles


def acquire(density: np.ndarray, profile: SiteProfile, rng: np.random.Generator) -> np.ndarray:
    """Simulate the site's detector: blur, response curve, contrast, noise and quantisation.

    Parameters
    ----------
    density
        ``(H, W)`` ideal image in ``[0, 1]`` (bright = dense).
    profile
        The site's settings.
    rng
        Seeded generator for the noise.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` ``uint8``, or ``uint16`` holding 12-bit values when ``profile.bit_depth == 16``.
    """
    size = density.shape[0]
    image = density.astype(np.float32)
    if profile.blur > 0:
        image = ndimage.gaussian_filter(image, profile.blur * size / REFERENCE_SIZE)
    image = np.clip(image, 0.0, 1.0) ** profile.gamma
    image = profile.offset + profile.contrast * image
    # Quantum noise grows with the signal (Poisson-like); a floor keeps the dark background noisy too.
    sigma = profile.noise * np.sqrt(0.2 + image)
    image = np.clip(image + sigma * rng.standard_normal(image.shape, dtype=np.float32), 0.0, 1.0)
    if profile.bit_depth == 16:
        return np.round(image * MAX_12_BIT).astype(np.uint16)
    return np.round(image * 255).astype(np.uint8)
