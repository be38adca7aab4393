"""benchmarks/training_throughput.py runs where only PyTorch, torchvision, numpy, pandas,
Pillow and PyYAML are installed: here with every other package the project uses blocked
(slow: each test runs the whole benchmark)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, env_with_venv

# Packages of requirements.txt (and what they bring) the benchmark must not need.
BLOCKED = ("pydantic", "dvc", "dvclive", "mlflow", "sklearn", "imblearn", "skorch", "tqdm", "matplotlib", "seaborn",
           "flask", "gunicorn", "requests", "scipy")

RUN_BLOCKED = """
import runpy, sys
for name in {blocked!r}:
    sys.modules[name] = None  # `import name` now raises ImportError
sys.argv = [{script!r}, *{arguments!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.slow
def test_the_training_throughput_benchmark_needs_only_pytorch_and_its_basics():
    script = str(ROOT / "benchmarks" / "training_throughput.py")
    arguments = ["--images", "64", "--val-images", "16", "--epochs", "1", "--batch-size", "16", "--repeats", "1"]
    code = RUN_BLOCKED.format(blocked=BLOCKED, script=script, arguments=arguments)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env_with_venv(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "device: CPU" in result.stdout or "device: NVIDIA" in result.stdout
    for line in ("bare PyTorch loop:", "fit with augment.*:", "ratio fit with augment.* / bare:",
                 "ratio bare with augment.* / bare:"):
        assert line in result.stdout, result.stdout


@pytest.mark.slow
def test_the_training_throughput_benchmark_compares_the_numerics_modes_in_one_run():
    script = str(ROOT / "benchmarks" / "training_throughput.py")
    arguments = ["--images", "64", "--val-images", "16", "--epochs", "1", "--batch-size", "16", "--repeats", "1",
                 "--numerics", "native,portable"]
    code = RUN_BLOCKED.format(blocked=BLOCKED, script=script, arguments=arguments)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env_with_venv(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "native     (AVX" in result.stdout and "portable   (AVX2, 2 threads)" in result.stdout, result.stdout
    assert "training time portable / native, fit        :" in result.stdout, result.stdout
