"""ViT width presets (Dosovitskiy et al., ICLR 2021; Touvron et al., DeiT, ICML 2021).

Each preset holds only its hyper-parameters; :func:`vit_dims` resolves a :class:`ModelConfig` against them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtmedformer.config.model import ModelConfig


@dataclass(frozen=True)
class VitPreset:
    """Hyper-parameters of one ViT size."""

    embed_dim: int  # token width d
    num_heads: int  # attention heads H (head width d / H = 64 for all presets)
    depth: int  # transformer blocks


PRESETS: dict[str, VitPreset] = {
    "tiny": VitPreset(embed_dim=192, num_heads=3, depth=12),  # ViT-Ti / DeiT-Ti
    "small": VitPreset(embed_dim=384, num_heads=6, depth=12),  # ViT-S / DeiT-S
    "base": VitPreset(embed_dim=768, num_heads=12, depth=12),  # ViT-B
}


def vit_dims(cfg: ModelConfig) -> VitPreset:
    """Return the effective ViT sizes of ``cfg``: its preset with ``cfg.depth`` applied when set.

    Raises
    ------
    ValueError
        If ``cfg.preset`` is not a known preset.
    """
    if cfg.preset not in PRESETS:
        raise ValueError(f"unknown ViT preset {cfg.preset!r}; valid presets: {list(PRESETS)}")
    preset = PRESETS[cfg.preset]
    depth = preset.depth if cfg.depth is None else cfg.depth
    return VitPreset(embed_dim=preset.embed_dim, num_heads=preset.num_heads, depth=depth)
