"""The shared ViT encoder of MTMedFormer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021).

Grayscale image ``(B, 1, H, W)`` -> patch tokens plus a class token, pre-LN transformer blocks from MONAI
(:class:`monai.networks.blocks.TransformerBlock`), final LayerNorm. Dense decoders also read intermediate
block outputs (UNETR, Hatamizadeh et al., WACV 2022).

Parameter names (``d`` = embedding width, ``H`` heads, ``d_h = d / H``, ``F`` = MLP width, ``N`` patches)::

    patch_embed.weight (d, 1, p, p), patch_embed.bias (d,)
    cls_token (1, 1, d), pos_embed (1, 1 + N, d)          # token 0 of pos_embed is the class token's
    blocks.{i}.norm1.{weight,bias} (d,)
    blocks.{i}.attn.qkv.{weight (3d, d), bias (3d,)}
    blocks.{i}.attn.out_proj.{weight (d, d), bias (d,)}
    blocks.{i}.norm2.{weight,bias} (d,)
    blocks.{i}.mlp.linear1.{weight (F, d), bias (F,)}
    blocks.{i}.mlp.linear2.{weight (d, F), bias (d,)}
    norm.{weight,bias} (d,)

Fused qkv layout (MONAI ``SABlock``, ``Rearrange("b n (qkv l d) -> qkv b l n d", qkv=3, l=H)``): output row
``r`` of ``attn.qkv`` is ``r = s * d + h * d_h + j`` with ``s`` in {0: q, 1: k, 2: v}, head ``h``, index ``j``
within the head. The attention output is re-assembled as ``"b l n d -> b n (l d)"``, so input column
``h * d_h + j`` of ``attn.out_proj`` reads value row ``j`` of head ``h``. A permutation of whole heads
therefore moves the three row blocks ``[s*d + h*d_h, s*d + (h+1)*d_h)`` together with the column block
``[h*d_h, (h+1)*d_h)`` of ``out_proj``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.blocks import TransformerBlock
from torch import nn


@dataclass
class EncoderOutput:
    """What :meth:`ViTEncoder.forward_features` returns.

    Attributes
    ----------
    tokens
        ``(B, 1 + N, d)`` after the final LayerNorm; token 0 is the class token, then ``N = h * w`` patch
        tokens in row-major order of the patch grid.
    hidden_states
        Outputs ``(B, 1 + N, d)`` of the blocks listed in ``ViTEncoder.hidden_blocks`` (before the final
        norm), shallowest first, for dense decoders.
    grid
        ``(h, w)``: the patch grid of this input, ``(H / p, W / p)``.
    """

    tokens: torch.Tensor
    hidden_states: list[torch.Tensor]
    grid: tuple[int, int]


def evenly_spaced_blocks(depth: int, count: int) -> tuple[int, ...]:
    """Return ``count`` block numbers (1-based, shallowest first) evenly spaced in ``depth`` blocks.

    UNETR reads blocks 3, 6, 9 of 12 for 3 skips: ``k * depth // (count + 1)`` for ``k = 1..count``,
    clipped to at least block 1 (shallow models repeat a block).

    Raises
    ------
    ValueError
        If ``depth < 1`` or ``count < 0``.
    """
    if depth < 1 or count < 0:
        raise ValueError(f"need depth >= 1 and count >= 0, got depth={depth}, count={count}")
    return tuple(max(1, k * depth // (count + 1)) for k in range(1, count + 1))


def resize_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Bicubically resize the patch part of a position embedding to a new patch grid; keep the class position.

    Parameters
    ----------
    pos_embed
        ``(1, 1 + old_h * old_w, d)``; token 0 belongs to the class token.
    old_grid, new_grid
        ``(h, w)`` patch grids.

    Returns
    -------
    torch.Tensor
        ``(1, 1 + new_h * new_w, d)``. At ``new_grid == old_grid`` the result equals the input (bicubic
        weights at offset 0 are exactly (0, 1, 0, 0)).

    Raises
    ------
    ValueError
        If ``pos_embed`` does not have ``1 + old_h * old_w`` tokens.
    """
    old_h, old_w = old_grid
    if pos_embed.shape[1] != 1 + old_h * old_w:
        raise ValueError(f"pos_embed has {pos_embed.shape[1]} tokens, expected 1 + {old_h}*{old_w}")
    dim = pos_embed.shape[-1]
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    patch_pos = patch_pos.reshape(1, old_h, old_w, dim).permute(0, 3, 1, 2)  # (1, d, old_h, old_w)
    patch_pos = F.interpolate(patch_pos, size=new_grid, mode="bicubic", align_corners=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)  # (1, N', d)
    return torch.cat([cls_pos, patch_pos], dim=1)


class EncoderBlock(TransformerBlock):
    """MONAI's pre-LN :class:`TransformerBlock` with PyTorch SDPA attention and separate attention dropout.

    ``x = x + attn(norm1(x)); x = x + mlp(norm2(x))``. Two adjustments to MONAI 1.6:

    - its SDPA path passes ``dropout_p=dropout_rate`` even in eval mode, so the SDPA dropout rate is set to
      ``attn_dropout`` in training and 0 in eval (see :meth:`train`);
    - it always builds ``norm_cross_attn`` even without cross-attention; that unused LayerNorm is replaced by
      ``nn.Identity`` so every parameter in the state dict takes part in the forward pass (an unused parameter
      gets no gradient and would be averaged for nothing by federated aggregation).

    Parameters
    ----------
    hidden_size
        Token width ``d``.
    mlp_dim
        MLP hidden width ``F``.
    num_heads
        Attention heads; must divide ``hidden_size``.
    dropout
        Dropout on the attention output and inside the MLP. Default 0.
    attn_dropout
        Dropout on attention weights, training only. Default 0.
    qkv_bias
        Bias on the fused q/k/v projection. Default True.
    """

    def __init__(
        self,
        hidden_size: int,
        mlp_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__(
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_heads=num_heads,
            dropout_rate=dropout,
            qkv_bias=qkv_bias,
            use_flash_attention=True,
        )
        self.norm_cross_attn = nn.Identity()
        self.attn_dropout = attn_dropout
        self.attn.drop_weights = nn.Dropout(attn_dropout)  # used by MONAI's non-SDPA path only
        self.attn.dropout_rate = attn_dropout if self.training else 0.0

    def train(self, mode: bool = True) -> EncoderBlock:
        """Switch train/eval mode; attention-weight dropout is active in training only."""
        super().train(mode)
        self.attn.dropout_rate = self.attn_dropout if mode else 0.0
        return self


class ViTEncoder(nn.Module):
    """ViT encoder for grayscale images with a learned, resizable position embedding.

    Parameters
    ----------
    image_size
        Side of the square training images in pixels; the position embedding is learned for the patch grid
        ``image_size / patch_size`` and bicubically resized for other input sizes.
    patch_size
        Patch side in pixels. Default 16.
    embed_dim
        Token width ``d``. Default 192 (ViT-Ti).
    depth
        Number of transformer blocks. Default 12.
    num_heads
        Attention heads (must divide ``embed_dim``). Default 3.
    mlp_ratio
        MLP width / ``embed_dim``. Default 4.
    qkv_bias
        Bias on the q/k/v projection. Default True.
    dropout
        Dropout on embedded tokens, attention output and MLP. Default 0.
    attn_dropout
        Dropout on attention weights. Default 0.
    hidden_blocks
        Block numbers (1-based) whose outputs :meth:`forward_features` returns in ``hidden_states``.
        Default none.

    Raises
    ------
    ValueError
        If a size is not positive, ``image_size`` is not a multiple of ``patch_size``, ``embed_dim`` is not a
        multiple of ``num_heads``, a dropout is outside [0, 1), or a hidden block is outside ``1..depth``.
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int = 16,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        hidden_blocks: Sequence[int] = (),
    ) -> None:
        super().__init__()
        for name, value in (
            ("image_size", image_size),
            ("patch_size", patch_size),
            ("embed_dim", embed_dim),
            ("depth", depth),
            ("num_heads", num_heads),
        ):
            if value < 1:
                raise ValueError(f"ViTEncoder {name} must be >= 1, got {value}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not a multiple of num_heads {num_heads}")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
        for name, value in (("dropout", dropout), ("attn_dropout", attn_dropout)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        bad = [b for b in hidden_blocks if not 1 <= b <= depth]
        if bad:
            raise ValueError(f"hidden_blocks {list(hidden_blocks)} must lie in 1..{depth}; bad: {bad}")

        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.grid = (image_size // patch_size, image_size // patch_size)
        self.hidden_blocks = tuple(hidden_blocks)

        self.patch_embed = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], embed_dim))
        self.pos_drop = nn.Dropout(dropout)
        mlp_dim = round(embed_dim * mlp_ratio)
        self.blocks = nn.ModuleList(
            EncoderBlock(embed_dim, mlp_dim, num_heads, dropout=dropout, attn_dropout=attn_dropout, qkv_bias=qkv_bias)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # timm/DeiT initialisation: truncated normal (std 0.02) for linear layers and the position embedding,
        # near-zero class token, LayerNorm at identity. PyTorch's default linear init is too wide for ViTs.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def depth(self) -> int:
        """Number of transformer blocks."""
        return len(self.blocks)

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """Return the position embedding ``(1, 1 + h * w, d)`` for patch grid ``grid``, resized if needed."""
        if grid == self.grid:
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, self.grid, grid)

    def forward_features(self, image: torch.Tensor) -> EncoderOutput:
        """Encode ``image`` ``(B, 1, H, W)`` (H, W multiples of the patch size) into tokens.

        Raises
        ------
        ValueError
            If ``image`` is not ``(B, 1, H, W)`` or ``H``/``W`` is not a multiple of the patch size.
        """
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"expected a grayscale batch (B, 1, H, W), got shape {tuple(image.shape)}")
        height, width = image.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}; "
                "resize or pad the images (data.image_size)"
            )
        x = self.patch_embed(image)  # (B, d, h, w)
        grid = (int(x.shape[-2]), int(x.shape[-1]))
        x = x.flatten(2).transpose(1, 2)  # (B, N, d), patches in row-major order
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, d)
        x = torch.cat([cls, x], dim=1) + self.position_embedding(grid)  # (B, 1 + N, d)
        x = self.pos_drop(x)
        wanted = set(self.hidden_blocks)
        states: dict[int, torch.Tensor] = {}
        for number, block in enumerate(self.blocks, start=1):
            x = block(x)
            if number in wanted:
                states[number] = x
        return EncoderOutput(tokens=self.norm(x), hidden_states=[states[n] for n in self.hidden_blocks], grid=grid)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Return the normalised tokens ``(B, 1 + N, d)`` of ``image`` ``(B, 1, H, W)``."""
        return self.forward_features(image).tokens


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Turn patch tokens (class token first) ``(B, 1 + h * w, d)`` into a feature map ``(B, d, h, w)``.

    Raises
    ------
    ValueError
        If the number of tokens does not match ``grid``.
    """
    height, width = grid
    if tokens.shape[1] != 1 + height * width:
        raise ValueError(f"got {tokens.shape[1]} tokens for a {height}x{width} patch grid (+1 class token)")
    patches = tokens[:, 1:]  # (B, N, d), drop the class token
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[-1], height, width)  # (B, d, h, w)
