"""train.device: resolution, clear errors, and CPU tensors wherever results leave the device."""

import pytest
import torch

from mtmedformer.engine.checkpoint import load_checkpoint, save_checkpoint
from mtmedformer.engine.device import module_device, resolve_device, to_cpu
from mtmedformer.errors import ConfigError


def test_auto_and_cpu_resolve_to_a_device_this_machine_has():
    # Execute
    auto, cpu = resolve_device("auto"), resolve_device("cpu")
    # Assert
    assert cpu == torch.device("cpu")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_names_the_key_and_the_fix():
    with pytest.raises(ConfigError, match=r"train\.device is 'cuda'.*set train\.device to auto or cpu"):
        resolve_device("cuda")


def test_unknown_device_is_rejected():
    with pytest.raises(ConfigError, match="must be auto, cpu or cuda"):
        resolve_device("tpu")


def test_to_cpu_keeps_the_structure_and_module_device_reads_parameters():
    # Prepare
    nested = {"a": torch.ones(2), "b": [torch.zeros(1), (torch.ones(1), 3)], "c": "text"}
    # Execute
    moved = to_cpu(nested)
    # Assert
    assert moved["c"] == "text" and moved["b"][1][1] == 3 and isinstance(moved["b"][1], tuple)
    assert all(t.device.type == "cpu" for t in (moved["a"], moved["b"][0], moved["b"][1][0]))
    assert module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert module_device(torch.nn.ReLU()) == torch.device("cpu")


def test_device_config_names_the_key(tiny_config):
    with pytest.raises(ConfigError, match=r"train\.device"):
        tiny_config(train={"device": "gpu"})


def test_checkpoint_written_from_any_device_loads_on_the_cpu(tiny_config, tmp_path):
    # Prepare
    cfg = tiny_config()
    model = torch.nn.Linear(3, 2).to(resolve_device("auto"))
    # Execute
    save_checkpoint(tmp_path / "m.pt", config=cfg, model=model, epoch=1)
    ckpt = load_checkpoint(tmp_path / "m.pt")
    # Assert
    assert all(v.device.type == "cpu" for v in ckpt.model_state.values())
