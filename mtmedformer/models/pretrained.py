"""Start the ViT encoder from a standard pretrained ViT checkpoint (timm or Hugging Face naming).

What a practitioner downloads elsewhere -- a timm ``vit_*_patch16_*`` / DeiT state dict, a Hugging Face
``ViTModel`` / ``ViTForImageClassification`` checkpoint, this project's own ``mtmedformer pretrain`` output,
or the encoder part of a training run's ``best.pt`` -- is mapped onto
:class:`~mtmedformer.models.vit_encoder.ViTEncoder` (Dosovitskiy et al., ICLR 2021). Checkpoint name (timm /
Hugging Face) -> encoder name:

- ``patch_embed.proj.*`` / ``embeddings.patch_embeddings.projection.*`` -> ``patch_embed.*`` (RGB summed);
- ``cls_token`` / ``embeddings.cls_token`` -> ``cls_token``;
- ``pos_embed`` / ``embeddings.position_embeddings`` -> ``pos_embed`` (resampled to the configured grid);
- ``blocks.i.attn.qkv.*`` / ``encoder.layer.i.attention.attention.{query,key,value}.*`` ->
  ``blocks.i.attn.qkv.*`` (Hugging Face's three projections stacked as rows q, k, v);
- ``blocks.i.attn.proj.*`` / ``encoder.layer.i.attention.output.dense.*`` -> ``blocks.i.attn.out_proj.*``;
- ``blocks.i.norm{1,2}.*`` / ``encoder.layer.i.layernorm_{before,after}.*`` -> ``blocks.i.norm{1,2}.*``;
- ``blocks.i.mlp.fc{1,2}.*`` / ``encoder.layer.i.{intermediate,output}.dense.*`` -> ``blocks.i.mlp.linear{1,2}.*``;
- ``norm.*`` / ``layernorm.*`` -> ``norm.*``.

Prefixes every tensor shares (``module.``, ``vit.``, ``encoder.``, ...) and wrapping dicts (``"model"``,
``"state_dict"``, ...) are removed first; transformers 5's in-memory names (``layers.i.attention.q_proj``,
...) are accepted too.

Why each step:

- *Grey input*: the encoder sees one channel; a grey image replicated to RGB through the checkpoint's
  filters equals the grey image through the filters summed over the colour axis, so the summed filter keeps
  what the network computed on a grey picture.
- *Position embedding*: the patch part is resized bicubically to the configured grid (class position kept),
  with antialiasing when shrinking, as timm's ``resample_abs_pos_embed`` does; checkpoints whose position
  embedding has no class entry (DeiT-3 style) get a zero one, which is what their forward adds.
- *Fused q/k/v*: timm stores the fused projection in the same ``(q | k | v, head, dim)`` row order as MONAI's
  ``SABlock``; Hugging Face stores three matrices, stacked here in that order.
- *LayerNorm epsilon*: the encoder's MONAI LayerNorms use PyTorch's 1e-5; timm ViTs, DeiT and the original
  JAX ViT use 1e-6. :func:`use_checkpoint_norm_eps` switches the encoder to 1e-6 whenever ``model.pretrained``
  is set (also when a fine-tuned model is rebuilt from its checkpoint). Hugging Face's ``ViTConfig`` default
  is 1e-12, a negligible difference at these activations' scale.

Classification heads, poolers and ``fc_norm`` of the checkpoint are not used (reported as ignored). Parts
the encoder lacks and that change what the network computes -- LayerScale (``ls1``/``ls2``), extra prefix
tokens (``dist_token``, ``reg_token``), a pre-norm (``norm_pre``), q/k norms -- are an error, as are a width,
depth, MLP-width or patch-size mismatch. The head count cannot be read from weights: the presets use 64-wide
heads like ViT-Ti/S/B.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mtmedformer.errors import ConfigError
from mtmedformer.models.vit_encoder import ViTEncoder

logger = logging.getLogger(__name__)

CHECKPOINT_NORM_EPS = 1e-6  # LayerNorm epsilon of timm / DeiT / JAX ViT checkpoints
SUFFIXES: tuple[str, ...] = (".safetensors", ".pt", ".pth", ".bin")
_WRAPPERS: tuple[str, ...] = ("state_dict", "model", "model_state", "encoder")  # nested dicts of training code
_PREFIXES: tuple[str, ...] = ("module.", "model.", "vit.", "encoder.", "backbone.")
_IGNORED = re.compile(r"(head|heads|fc_norm|pooler|classifier|head_dist|decoder|mask_token)(\..*)?")
_UNSUPPORTED = re.compile(
    r"(dist_token|reg_token|norm_pre\..*|.*\.ls[12]\..*|.*\.(q_norm|k_norm)\..*|.*\.lambda_.*|.*\.gamma_[12])"
)


@dataclass
class LoadReport:
    """Which encoder tensors a checkpoint filled, and how.

    Attributes
    ----------
    path
        The checkpoint file.
    naming
        ``"timm"`` or ``"huggingface"``: the naming the checkpoint used.
    loaded
        Encoder tensors copied unchanged.
    reshaped
        Encoder tensors derived from a checkpoint tensor, with what was done (``name: why``).
    fresh
        Encoder tensors the checkpoint does not hold; they keep their initialisation.
    ignored
        Checkpoint tensors not used (classification heads, poolers, ...).
    """

    path: Path
    naming: str
    loaded: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the log: counts, reshaped tensors and the first fresh/ignored names."""
        parts = [
            f"{self.path.name} ({self.naming} naming): {len(self.loaded)} tensors loaded",
            f"{len(self.reshaped)} reshaped ({'; '.join(self.reshaped)})" if self.reshaped else "0 reshaped",
            f"{len(self.fresh)} left fresh" + (f" ({', '.join(self.fresh[:4])}...)" if self.fresh else ""),
            f"{len(self.ignored)} ignored" + (f" ({', '.join(self.ignored[:4])}...)" if self.ignored else ""),
        ]
        return ", ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the tensors of a ``.safetensors`` or ``.pt``/``.pth``/``.bin`` checkpoint on the CPU.

    Nested training checkpoints (``{"model": {...}}``, ``{"state_dict": {...}}``, this project's
    ``mtmedformer pretrain`` file) are unwrapped; non-tensor entries are dropped.

    Raises
    ------
    ConfigError
        If the file is missing, has another extension, cannot be read, or holds no tensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.pretrained: {path} does not exist; give the path of a downloaded checkpoint file")
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"model.pretrained: {path.name} is not a checkpoint file; use one of {', '.join(SUFFIXES)}")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors, pickle and zip errors have no common base class
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ConfigError(
            f"model.pretrained: cannot read {path} ({type(exc).__name__}: {first_line}); re-download it"
        ) from None
    for _ in range(3):  # a few levels of wrapping at most
        if not isinstance(obj, Mapping) or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, Mapping) else {}
    if not tensors:
        raise ConfigError(f"model.pretrained: {path} holds no tensors; expected a ViT state dict")
    return tensors


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = dict(state)
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            # Strip only a prefix every ViT tensor carries (a model's "encoder." may also name a submodule).
            keys = [k for k in state if not _IGNORED.fullmatch(k)]
            if keys and all(k.startswith(prefix) for k in keys):
                state = {k.removeprefix(prefix): v for k, v in state.items()}
                changed = True
    return state


_HF_LAYER = re.compile(r"(?:encoder\.layer|layers)\.(\d+)\.(.+)")
_HF_BLOCK_NAMES = {
    "attention.output.dense": "attn.out_proj",  # hub files (transformers 4 naming, also what v5 writes)
    "attention.o_proj": "attn.out_proj",  # transformers 5 module names
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.linear1",
    "output.dense": "mlp.linear2",
    "mlp.fc1": "mlp.linear1",
    "mlp.fc2": "mlp.linear2",
}
_HF_QKV = {"attention.attention.query": 0, "attention.attention.key": 1, "attention.attention.value": 2,
           "attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2}  # fmt: skip
_TIMM_BLOCK_NAMES = {"attn.proj": "attn.out_proj", "mlp.fc1": "mlp.linear1", "mlp.fc2": "mlp.linear2"}


def _rename_timm(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    out: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in state.items():
        if key.startswith("patch_embed.proj."):
            out["patch_embed." + key.removeprefix("patch_embed.proj.")] = value
        elif key in ("cls_token", "pos_embed") or re.fullmatch(r"(norm|patch_embed)\.(weight|bias)", key):
            out[key] = value
        elif match := re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", key):
            block, module, kind = match.groups()
            module = _TIMM_BLOCK_NAMES.get(module, module)
            out[f"blocks.{block}.{module}.{kind}"] = value
        else:
            ignored.append(key)
    return out, ignored


def _rename_hf(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    out: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    qkv: dict[tuple[int, str], list[torch.Tensor | None]] = {}
    simple = {
        "embeddings.cls_token": "cls_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    for key, value in state.items():
        if key in simple:
            out[simple[key]] = value
            continue
        match = _HF_LAYER.fullmatch(key)
        module, _, kind = match.group(2).rpartition(".") if match else ("", "", "")
        if match is None or kind not in ("weight", "bias"):
            ignored.append(key)
        elif module in _HF_QKV:
            qkv.setdefault((int(match.group(1)), kind), [None, None, None])[_HF_QKV[module]] = value
        elif module in _HF_BLOCK_NAMES:
            out[f"blocks.{match.group(1)}.{_HF_BLOCK_NAMES[module]}.{kind}"] = value
        else:
            ignored.append(key)
    for (block, kind), parts in qkv.items():
        if any(p is None for p in parts):
            raise ConfigError(f"model.pretrained: block {block} lacks one of query/key/value {kind}; the file is cut")
        out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)  # type: ignore[arg-type]  # rows q, k, v
    return out, ignored


def to_encoder_names(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Rename a timm or Hugging Face ViT state dict onto the encoder's names (shapes not yet adapted).

    Returns
    -------
    tuple
        ``(renamed, naming, ignored)``: tensors under encoder names, ``"timm"``/``"huggingface"``, and the
        checkpoint keys not used.

    Raises
    ------
    ConfigError
        If the naming is neither, or the checkpoint has parts the encoder lacks (see the module docstring).
    """
    state = _strip_prefixes(state)
    unsupported = sorted(k for k in state if _UNSUPPORTED.fullmatch(k))
    if unsupported:
        raise ConfigError(
            "model.pretrained: the checkpoint has parts this ViT encoder does not have "
            f"({', '.join(unsupported[:4])}); "
            "use a plain ViT/DeiT checkpoint (no LayerScale, distillation or register tokens, pre-norm, q/k norm)"
        )
    if any(k.startswith("embeddings.") for k in state):
        return _named(state, "hf")
    if "pos_embed" in state or any(k.startswith("blocks.") for k in state):
        return _named(state, "timm")
    raise ConfigError(
        "model.pretrained: the checkpoint is not a ViT state dict in timm or Hugging Face naming "
        f"(first keys: {', '.join(list(state)[:5])})"
    )


def _named(state: dict[str, torch.Tensor], kind: str) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    rename: Callable[[dict[str, torch.Tensor]], tuple[dict[str, torch.Tensor], list[str]]]
    rename, naming = (_rename_hf, "huggingface") if kind == "hf" else (_rename_timm, "timm")
    renamed, ignored = rename(state)
    return renamed, naming, ignored


def resample_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a checkpoint's ``(1, 1 + n * n, d)`` position embedding to ``grid``; class position kept.

    Bicubic, antialiased when the grid shrinks (timm's ``resample_abs_pos_embed``). A ``(1, n * n, d)``
    embedding without a class entry gets a zero one (what a DeiT-3 style forward adds to the class token).

    Raises
    ------
    ConfigError
        If the patch part is not a square grid.
    """
    tokens = pos_embed.shape[1]
    has_cls = math.isqrt(tokens) ** 2 != tokens
    patches = tokens - int(has_cls)
    side = math.isqrt(patches)
    if side * side != patches:
        raise ConfigError(f"model.pretrained: pos_embed has {tokens} tokens, not 1 + n * n for a square patch grid")
    cls_pos = pos_embed[:, :1] if has_cls else torch.zeros_like(pos_embed[:, :1])
    patch_pos = pos_embed[:, int(has_cls) :]
    if (side, side) != tuple(grid):
        dim = pos_embed.shape[-1]
        patch_pos = patch_pos.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)  # (1, d, n, n)
        patch_pos = F.interpolate(patch_pos, size=tuple(grid), mode="bicubic", align_corners=False, antialias=True)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim).to(pos_embed.dtype)  # (1, N, d)
    return torch.cat([cls_pos, patch_pos], dim=1)


def use_checkpoint_norm_eps(encoder: ViTEncoder) -> None:
    """Give every LayerNorm of ``encoder`` the epsilon pretrained ViT checkpoints were trained with (1e-6)."""
    for module in encoder.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = CHECKPOINT_NORM_EPS


def _adapt(name: str, source: torch.Tensor, target: torch.Tensor, encoder: ViTEncoder) -> tuple[torch.Tensor, str]:
    """Return the checkpoint tensor shaped for ``name`` and why it was reshaped ('' = unchanged)."""
    if name == "patch_embed.weight" and source.ndim == 4 and source.shape[1] != target.shape[1]:
        if target.shape[1] != 1 or source.shape[2:] != target.shape[2:]:
            raise ConfigError(
                f"model.pretrained: patch filters {tuple(source.shape)} do not fit the encoder's "
                f"{tuple(target.shape)}; set model.patch_size to {source.shape[-1]}"
            )
        return source.sum(dim=1, keepdim=True), f"{name}: {source.shape[1]} colour channels summed to grey"
    if name == "pos_embed" and source.shape[:-1] != target.shape[:-1]:
        return resample_pos_embed(source, encoder.grid), f"{name}: {source.shape[1]} -> {target.shape[1]} tokens"
    if source.shape != target.shape:
        raise ConfigError(
            f"model.pretrained: {name} is {tuple(source.shape)} in the checkpoint but {tuple(target.shape)} in the "
            "encoder; model.preset, model.patch_size and model.mlp_ratio must match the checkpoint"
        )
    return source, ""


def load_pretrained_encoder(encoder: ViTEncoder, path: str | Path) -> LoadReport:
    """Copy a pretrained ViT checkpoint into ``encoder`` in place and return what was loaded.

    Parameters
    ----------
    encoder
        A freshly built encoder; its LayerNorm epsilon is set to the checkpoint convention (1e-6).
    path
        A ``.safetensors`` / ``.pt`` checkpoint in timm or Hugging Face naming, or ``mtmedformer pretrain``'s.

    Raises
    ------
    ConfigError
        If the file cannot be read, its naming is unknown, it has unsupported parts, or its width, depth,
        MLP width or patch size differs from the encoder's.
    """
    path = Path(path).expanduser()
    renamed, naming, ignored = to_encoder_names(read_state_dict(path))
    width = next((renamed[k].shape[-1] for k in ("cls_token", "norm.weight", "pos_embed") if k in renamed), None)
    if width is not None and width != encoder.embed_dim:
        raise ConfigError(
            f"model.pretrained: the checkpoint is {width} wide but model.preset gives {encoder.embed_dim}; "
            "choose the preset of the checkpoint (tiny 192, small 384, base 768)"
        )
    depth = 1 + max((int(k.split(".")[1]) for k in renamed if k.startswith("blocks.")), default=-1)
    if depth != encoder.depth:
        raise ConfigError(
            f"model.pretrained: the checkpoint has {depth} transformer blocks but the encoder {encoder.depth}; "
            f"set model.depth to {depth} (or null for the preset's 12)"
        )
    report = LoadReport(path=path, naming=naming, ignored=ignored)
    target = encoder.state_dict()
    new_state = {}
    for name, tensor in target.items():
        if name not in renamed:
            report.fresh.append(name)
            continue
        value, why = _adapt(name, renamed[name], tensor, encoder)
        new_state[name] = value.to(tensor.dtype)
        (report.reshaped if why else report.loaded).append(why or name)
    report.ignored.extend(sorted(k for k in renamed if k not in target))
    encoder.load_state_dict(new_state, strict=False)
    use_checkpoint_norm_eps(encoder)
    logger.info("pretrained encoder: %s", report.summary())
    return report
