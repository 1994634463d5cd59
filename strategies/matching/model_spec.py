"""The permutation spec of MTMedFormer, read from the model's own modules so it reads like the network.

Groups (``d`` embedding width, ``H`` heads, ``F`` MLP width):

- ``encoder.residual`` (P_res, ``d``): patch-embedding rows and bias, the last axis of class token and position
  embedding, every LayerNorm, q/k/v input columns, attention-projection and ``linear2`` rows and biases,
  ``linear1`` input columns, and every head layer that reads encoder tokens or hidden states.
- ``encoder.blocks.{i}.mlp`` (P_mlp, ``F``): ``linear1`` rows and bias, ``linear2`` columns.
- ``encoder.blocks.{i}.attn.qk`` / ``.vo`` (``d``), tied by ``encoder.blocks.{i}.attn.heads`` (P_head, ``H``
  blocks of ``d / H``): the within-head parts are P_qk / P_vo. Fused rows of ``attn.qkv`` are
  ``[q | k | v]``, each head-major (MONAI ``SABlock``: ``"b n (qkv l d) -> qkv b l n d"``), so the row axis
  is the concatenation ``(qk, qk, vo)`` and ``attn.out_proj`` columns are ``vo``.
- Decoder channels (P_dec), one group per layer output, named after the module that produces it:
  ``<block>.hidden`` (inside a residual/basic conv block), ``<block>.out`` (a block output; a residual block
  without a 1x1 shortcut keeps its input's group, as the skip connection adds its input), ``<transposed
  conv>`` for upsampling layers. A decoder block reading ``cat(upsampled, skip)`` takes the block-diagonal
  union ``(up, skip)`` on its input axis.

Not permuted: class/mask/box/centre-ness output channels, input image channels, token positions, kernel taps.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import (
    Convolution,
    TransformerBlock,
    UnetBasicBlock,
    UnetOutBlock,
    UnetrBasicBlock,
    UnetResBlock,
    UnetrPrUpBlock,
    UnetrUpBlock,
)
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from mtmedformer.models.classification import ClassificationHead
from mtmedformer.models.decoder import UpDecoder
from mtmedformer.models.detection import DetectionHead
from mtmedformer.models.multitask import MultiTaskModel
from mtmedformer.models.pyramids import ViTPyramid
from mtmedformer.models.segmentation import SegmentationHead
from mtmedformer.models.vit_encoder import ViTEncoder
from strategies.matching.errors import MatchingError
from strategies.matching.layers import Axis, batch_norm, conv, group_norm, layer_norm, linear, parameter
from strategies.matching.spec import AxisEntry, PermutationSpec, Segment, SpecBuilder


def build_spec(model: nn.Module) -> PermutationSpec:
    """Return the permutation spec of an :class:`~mtmedformer.models.MTMedFormer` (every state-dict key).

    Parameters
    ----------
    model
        A multi-task model with a :class:`~mtmedformer.models.ViTEncoder` (MTMedFormer, e.g.
        ``build_model(cfg.model, image_size, num_classes)``). Weights are not read, so a model built under
        ``torch.device("meta")`` works. A state dict alone cannot give the head count.

    Returns
    -------
    PermutationSpec
        Keys named as in ``model.state_dict()``; keys of ``heads.<task>.*`` belong to ``<task>``.

    Raises
    ------
    MatchingError
        If the model is not an MTMedFormer (e.g. ``arch: cnn``: matching supports the ViT model only), uses a
        module the spec does not know, or a state-dict key is left uncovered.
    """
    if not isinstance(model, MultiTaskModel) or not isinstance(model.encoder, ViTEncoder):
        raise MatchingError(
            f"neuron matching needs MTMedFormer's ViT encoder (model.arch 'vit'), got {type(model).__name__}; "
            "use a coordinate-wise strategy (e.g. fedavg) for other architectures"
        )
    b = SpecBuilder()
    res = vit_encoder(b, "encoder", model.encoder)
    # Heads in the order the model calls them (the classifier last); this fixes the order of the spec's keys.
    order = sorted(model.heads, key=lambda task: isinstance(model.heads[task], ClassificationHead))
    for task in order:
        head = model.heads[task]
        with b.for_task(task):
            prefix = f"heads.{task}"
            if isinstance(head, ClassificationHead):  # reads the pooled encoder tokens (class token or mean)
                linear(b, f"{prefix}.fc", None, res, bias=head.fc.bias is not None)
                descriptor_probe(b, prefix, head)
            elif isinstance(head, SegmentationHead):
                out = dense_decoder(b, prefix, head.pyramid, head.decoder, res)
                out_block(b, f"{prefix}.out", head.out, out)
            elif isinstance(head, DetectionHead):
                out = dense_decoder(b, prefix, head.pyramid, head.decoder, res)
                out = conv_block(b, f"{prefix}.tower", head.tower, out)
                for name in ("cls_logits", "bbox_reg", "centerness"):
                    plain_conv(b, f"{prefix}.{name}", getattr(head, name), None, out)
            else:
                raise MatchingError(f"no permutation spec for head '{task}' of type {type(head).__name__}")
    spec = b.build()
    state = {name: torch.empty(0) for name in model.state_dict()}  # only the keys are compared here
    uncovered = sorted(set(state) - set(spec.axes))
    if uncovered:
        raise MatchingError(f"the permutation spec misses keys of {type(model).__name__}: {uncovered[:8]}")
    return spec


# ----------------------------------------------------------------------------------------------------- encoder


def vit_encoder(b: SpecBuilder, prefix: str, encoder: ViTEncoder) -> str:
    """Patch embedding, class/position embeddings, pre-LN blocks, final norm; returns the residual group."""
    res = b.group(f"{prefix}.residual", encoder.embed_dim)
    plain_conv(b, f"{prefix}.patch_embed", encoder.patch_embed, res, None)  # the image channel is not permuted
    parameter(b, f"{prefix}.cls_token", None, None, res)
    parameter(b, f"{prefix}.pos_embed", None, None, res)  # token axis never permuted
    for i, block in enumerate(encoder.blocks):
        vit_block(b, f"{prefix}.blocks.{i}", block, res)
    layer_norm(b, f"{prefix}.norm", res)
    return res


def vit_block(b: SpecBuilder, prefix: str, block: TransformerBlock, res: str) -> None:
    """``x + attn(norm1(x))``, ``x + mlp(norm2(x))`` with MONAI's fused-qkv ``SABlock`` and ``MLPBlock``."""
    attn = block.attn
    if not attn.use_combined_linear or not attn.include_fc or attn.rel_positional_embedding is not None:
        raise MatchingError(f"'{prefix}.attn': matching supports fused qkv, an output projection, no rel. pos.")
    if getattr(block, "with_cross_attention", False):
        raise MatchingError(f"'{prefix}': cross-attention blocks are not supported")
    if block.mlp.linear1.out_features != block.mlp.linear2.in_features:
        raise MatchingError(f"'{prefix}.mlp': gated MLPs (GEGLU) are not supported")
    heads = attn.num_heads
    qk = b.group(f"{prefix}.attn.qk", attn.inner_dim)  # q and k rows of every head, jointly
    vo = b.group(f"{prefix}.attn.vo", attn.inner_dim)  # v rows and out_proj columns
    b.tie(f"{prefix}.attn.heads", (qk, vo), heads)
    layer_norm(b, f"{prefix}.norm1", res)
    linear(b, f"{prefix}.attn.qkv", b.axis(qk, qk, vo), res, bias=attn.qkv.bias is not None)  # rows [q | k | v]
    linear(b, f"{prefix}.attn.out_proj", res, vo, bias=attn.out_proj.bias is not None)
    layer_norm(b, f"{prefix}.norm2", res)
    mlp = b.group(f"{prefix}.mlp", block.mlp.linear1.out_features)
    linear(b, f"{prefix}.mlp.linear1", mlp, res, bias=block.mlp.linear1.bias is not None)
    linear(b, f"{prefix}.mlp.linear2", res, mlp, bias=block.mlp.linear2.bias is not None)


# ----------------------------------------------------------------------------------------------------- decoders


def descriptor_probe(b: SpecBuilder, prefix: str, head: ClassificationHead) -> None:
    """The descriptor probe's buffers: descriptor and class axes, neither permuted (averaged as they are)."""
    if head.probe is not None:
        for name in ("mean", "std", "bias"):
            b.add(f"{prefix}.probe.{name}", None)
        b.add(f"{prefix}.probe.weight", None, None)


def dense_decoder(b: SpecBuilder, prefix: str, pyramid: nn.Module, decoder: UpDecoder, res: str) -> Axis:
    """UNETR skip paths and up-decoder of a dense head; returns the axis of the decoder output."""
    if not isinstance(pyramid, ViTPyramid):
        raise MatchingError(f"'{prefix}.pyramid': expected a ViTPyramid, got {type(pyramid).__name__}")
    skips: dict[int, Axis] = {}
    for stride in pyramid.channels:
        name, module = f"{prefix}.pyramid.skips.stride{stride}", pyramid.skips[f"stride{stride}"]
        if isinstance(module, UnetrBasicBlock):  # conv block on the image: input channels not permuted
            skips[stride] = conv_block(b, f"{name}.layer", module.layer, None)
        elif isinstance(module, UnetrPrUpBlock):  # reads a hidden state (B, d, h, w): input channels are P_res
            skips[stride] = progressive_up_block(b, name, module, res)
        else:
            raise MatchingError(f"'{name}': unsupported skip module {type(module).__name__}")
    x: Axis = res  # the bottleneck is the final token grid
    for stride in decoder.strides:
        name, module = f"{prefix}.decoder.ups.stride{stride}", decoder.ups[f"stride{stride}"]
        x = up_block(b, name, module, x, skips[stride])
    return x


def progressive_up_block(b: SpecBuilder, prefix: str, block: UnetrPrUpBlock, inp: Axis) -> Axis:
    """``transp_conv_init`` then ``blocks``: each a transposed conv, optionally followed by a conv block."""
    x = b.group(f"{prefix}.transp_conv_init", _out_channels(block.transp_conv_init))
    plain_conv(b, f"{prefix}.transp_conv_init", block.transp_conv_init, x, inp)
    for i, step in enumerate(block.blocks):
        name = f"{prefix}.blocks.{i}"
        if isinstance(step, nn.Sequential):  # (transposed conv, conv block)
            up = b.group(f"{name}.0", _out_channels(step[0]))
            plain_conv(b, f"{name}.0", step[0], up, x)
            x = conv_block(b, f"{name}.1", step[1], up)
        else:
            up = b.group(name, _out_channels(step))
            plain_conv(b, name, step, up, x)
            x = up
    return x


def up_block(b: SpecBuilder, prefix: str, block: UnetrUpBlock, inp: Axis, skip: Axis) -> Axis:
    """Transposed conv, ``cat((up, skip), dim=1)``, conv block."""
    up = b.group(f"{prefix}.transp_conv", _out_channels(block.transp_conv))
    plain_conv(b, f"{prefix}.transp_conv", block.transp_conv, up, inp)
    skip_channels = block.conv_block.conv1.conv.in_channels - b.size(up)
    return conv_block(b, f"{prefix}.conv_block", block.conv_block, concat(b, (up, b.size(up)), (skip, skip_channels)))


def conv_block(b: SpecBuilder, prefix: str, block: nn.Module, inp: Axis) -> Axis:
    """MONAI ``UnetResBlock`` / ``UnetBasicBlock``; returns the axis of the block output."""
    channels = _out_channels(block.conv1)
    hidden = b.group(f"{prefix}.hidden", channels)
    plain_conv(b, f"{prefix}.conv1", block.conv1, hidden, inp)
    norm(b, f"{prefix}.norm1", block.norm1, hidden)
    if isinstance(block, UnetResBlock):
        if getattr(block, "downsample", False):
            out: Axis = b.group(f"{prefix}.out", channels)
            plain_conv(b, f"{prefix}.conv3", block.conv3, out, inp)
            norm(b, f"{prefix}.norm3", block.norm3, out)
        else:
            out = inp  # out = conv path + input: the block output carries the input's permutation
    elif isinstance(block, UnetBasicBlock):
        out = b.group(f"{prefix}.out", channels)
    else:
        raise MatchingError(f"'{prefix}': unsupported conv block {type(block).__name__}")
    plain_conv(b, f"{prefix}.conv2", block.conv2, out, hidden)
    norm(b, f"{prefix}.norm2", block.norm2, out)
    return out


def out_block(b: SpecBuilder, prefix: str, block: UnetOutBlock, inp: Axis) -> None:
    """1x1 output convolution: output channels (mask logits) are not permuted."""
    plain_conv(b, f"{prefix}.conv", block.conv, None, inp)


# ----------------------------------------------------------------------------------------------------- layers


def plain_conv(b: SpecBuilder, prefix: str, module: nn.Module, out: Axis, inp: Axis) -> None:
    """A ``nn.Conv2d`` / ``nn.ConvTranspose2d`` (or MONAI ``Convolution`` wrapping one, named ``.conv``)."""
    if isinstance(module, Convolution):
        if len(module) != 1:
            raise MatchingError(f"'{prefix}': a MONAI Convolution with norm/activation inside is not supported")
        return plain_conv(b, f"{prefix}.conv", module.conv, out, inp)
    if not isinstance(module, nn.Conv2d | nn.ConvTranspose2d) or module.groups != 1:
        raise MatchingError(f"'{prefix}': expected an ungrouped 2D convolution, got {module}")
    conv(b, prefix, out, inp, bias=module.bias is not None, transposed=isinstance(module, nn.ConvTranspose2d))
    return None


def norm(b: SpecBuilder, prefix: str, module: nn.Module, channels: Axis) -> None:
    """Batch/instance norm (per channel), GroupNorm (channels move within or with whole norm groups)."""
    if isinstance(module, _NormBase):
        batch_norm(b, prefix, channels, affine=module.affine, track_running_stats=module.track_running_stats)
    elif isinstance(module, nn.GroupNorm):
        if module.num_groups in (1, module.num_channels):
            layer_norm(b, prefix, channels, affine=module.affine)  # any channel permutation is exact
        elif isinstance(channels, str):
            group_norm(b, prefix, channels, module.num_groups, affine=module.affine)
        else:
            raise MatchingError(f"'{prefix}': GroupNorm over a concatenation of channel groups is not supported")
    elif not isinstance(module, nn.Identity):
        raise MatchingError(f"'{prefix}': unsupported normalisation {type(module).__name__}")


def concat(b: SpecBuilder, *parts: tuple[Axis, int]) -> AxisEntry:
    """Axis entry of a channel concatenation: the block-diagonal union of its parts' permutations."""
    segments: list[Segment] = []
    for axis, channels in parts:
        if axis is None:
            segments.append(Segment(None, channels))
        elif isinstance(axis, str):
            segments.append(Segment(axis, b.size(axis)))
        else:
            segments.extend(axis)
    return tuple(segments)


def _out_channels(module: nn.Module) -> int:
    inner = module.conv if isinstance(module, Convolution) else module
    return inner.out_channels
