"""Multi-task networks: MTMedFormer (ViT encoder + task heads) and the ResNet-18 CNN baseline."""

from mtmedformer.models.build import ARCHITECTURES, build_model
from mtmedformer.models.cnn_baseline import CNNMultiTaskBaseline
from mtmedformer.models.detection import DetectionHead
from mtmedformer.models.mtmedformer import MTMedFormer
from mtmedformer.models.multitask import MultiTaskModel
from mtmedformer.models.parameters import ENCODER, count_parameters, group_keys, group_of_key, head_prefix
from mtmedformer.models.presets import PRESETS, VitPreset, vit_dims
from mtmedformer.models.vit_encoder import EncoderOutput, ViTEncoder

__all__ = [
    "ARCHITECTURES",
    "ENCODER",
    "PRESETS",
    "CNNMultiTaskBaseline",
    "DetectionHead",
    "EncoderOutput",
    "MTMedFormer",
    "MultiTaskModel",
    "ViTEncoder",
    "VitPreset",
    "build_model",
    "count_parameters",
    "group_keys",
    "group_of_key",
    "head_prefix",
    "vit_dims",
]
