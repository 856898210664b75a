"""The gpu marker refuses to pass on a machine without CUDA."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_the_gpu_tests_fail_without_cuda():
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                          "--collect-only", "tests/test_markers.py"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode != 0
    assert "need a CUDA device" in res.stdout + res.stderr
