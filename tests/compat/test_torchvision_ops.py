import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtmedformer.compat import import_torchvision, torchvision_has_native_ops
from mtmedformer.compat.torchvision_ops import STUB_OP_SCHEMAS, _unavailable_kernel

NATIVE = torchvision_has_native_ops()
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_import_returns_torchvision_and_is_idempotent():
    # Execute
    first, second = import_torchvision(), import_torchvision()

    # Assert
    assert first is second is sys.modules["torchvision"]
    assert hasattr(first.models, "resnet18")


def test_resnet18_forward_works():
    # Prepare
    torchvision = import_torchvision()
    net = torchvision.models.resnet18(weights=None, num_classes=4).eval()

    # Execute
    with torch.no_grad():
        logits = net(torch.rand(1, 3, 64, 64))

    # Assert
    assert logits.shape == (1, 4) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", list(STUB_OP_SCHEMAS))
def test_import_time_ops_are_registered(name):
    import_torchvision()
    assert hasattr(torch.ops.torchvision, name)


@pytest.mark.skipif(NATIVE, reason="torchvision's native ops loaded: no stand-ins were registered")
def test_stand_in_op_raises_a_clear_error():
    with pytest.raises(
        RuntimeError, match=r"torchvision::nms is unavailable.*monai\.data\.box_utils\.non_max_suppression"
    ):
        torch.ops.torchvision.nms(torch.zeros(2, 4), torch.zeros(2), 0.5)


@pytest.mark.skipif(not NATIVE, reason="torchvision's native ops did not load here")
def test_native_op_still_works():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
    assert torch.ops.torchvision.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]


def test_stand_in_kernel_message_names_the_cause_and_the_alternative():
    kernel = _unavailable_kernel("nms", "OSError: cannot open libtorch_cuda.so")
    with pytest.raises(RuntimeError, match=re.escape("did not load (OSError: cannot open libtorch_cuda.so)")):
        kernel(torch.zeros(1, 4), torch.zeros(1), 0.5)


def test_first_call_in_a_fresh_interpreter_imports_torchvision():
    # Execute: a new process, so the first-call path runs whatever other tests did before
    code = (
        "import torch\n"
        "from mtmedformer.compat import import_torchvision\n"
        "tv = import_torchvision()\n"
        "net = tv.models.resnet18(weights=None).eval()\n"
        "print(tuple(net(torch.zeros(1, 3, 64, 64)).shape))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, cwd=REPO_ROOT
    )

    # Assert
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 1000)"
