"""CPU numerics (lifecycle/core/numerics.py, docs/numerics.md): the mode is chosen before torch
loads, ``native`` changes nothing, and ``portable`` gives the same bytes on this machine as it
is, on one core, as a machine with four cores would start (OMP_NUM_THREADS=4), with the
libraries' variables held to AVX2 explicitly, and on emulated AVX2-only CPUs of both vendors
(qemu-x86_64 -cpu EPYC-Rome, -cpu Haswell-v4; Debian's qemu-user, skipped without it)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle.core import numerics
from lifecycle.core.errors import UserError
from lifecycle.core.params import validate
from lifecycle.core.schema import PipelineParams

ROOT = Path(__file__).resolve().parents[1]
CHILD = ROOT / "tests" / "numerics_fit.py"
ARCHITECTURES = ("seed_cnn", "resnet18")
# Portable digests of tests/numerics_fit.py measured on an Intel Xeon (family 6, model 207, AVX-512, AMX),
# torch 2.14.1; another machine with the same torch must print the same (docs/numerics.md).
REFERENCE = {"2.14.1": {"seed_cnn": "b8ecc8bf4a984181", "resnet18": "1f3ee6cd343c0cec"}}
_LIBRARY_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "OMP_NUM_THREADS",
                      "MKL_NUM_THREADS", "MKL_ENABLE_INSTRUCTIONS", numerics.ENVIRONMENT_VARIABLE)


@pytest.fixture
def clean_environment(monkeypatch):
    for name in _LIBRARY_VARIABLES:  # set first, so that what apply() writes is undone after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(numerics, "_applied", numerics.current())  # and the mode this process applied
    return monkeypatch


def test_the_environment_variable_wins_over_params(clean_environment, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("numerics: portable\n")
    assert numerics.configured(params) == "portable"
    clean_environment.setenv(numerics.ENVIRONMENT_VARIABLE, "native")
    assert numerics.configured(params) == "native"


def test_default_is_native_when_params_do_not_say(clean_environment, tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    assert numerics.configured(tmp_path / "params.yaml") == "native"
    assert numerics.configured(tmp_path / "missing.yaml") == "native"


def test_native_sets_nothing_and_portable_sets_every_switch(clean_environment):
    before = dict(os.environ)
    assert numerics.apply("native") == "native"
    assert dict(os.environ) == before  # nothing, not even the mode: a child reads its own params.yaml
    assert numerics.current() == "native" and numerics.adam_options() == {}
    clean_environment.setenv("ATEN_CPU_CAPABILITY", "avx512")  # a stray value must not break the guarantee
    clean_environment.setenv("OMP_NUM_THREADS", "4")           # nor the machine's core count
    numerics.apply("portable")
    assert {k: os.environ[k] for k in numerics.PORTABLE_ENVIRONMENT} == {
        "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE",
        "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    assert numerics.current() == "portable" and numerics.adam_options() == {"fused": True}
    assert numerics.ENVIRONMENT_VARIABLE not in os.environ


def test_an_unknown_mode_is_one_sentence_naming_its_source(clean_environment):
    clean_environment.setenv(numerics.ENVIRONMENT_VARIABLE, "fast")
    with pytest.raises(ValueError, match="^LIFECYCLE_NUMERICS is 'fast'; it must be one of native, portable$"):
        numerics.apply()
    result = subprocess.run([sys.executable, "-c", "import lifecycle"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, numerics.ENVIRONMENT_VARIABLE: "fast"})
    assert result.returncode != 0
    assert result.stderr.strip() == "error: LIFECYCLE_NUMERICS is 'fast'; it must be one of native, portable"


def test_the_schema_accepts_the_two_modes_and_names_the_key_otherwise():
    import yaml

    document = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert validate(PipelineParams, document).numerics == document["numerics"]
    assert validate(PipelineParams, {**document, "numerics": "portable"}).numerics == "portable"
    with pytest.raises(UserError, match="'numerics'"):
        validate(PipelineParams, {**document, "numerics": "fast"})


def _fit(architecture: str, *overrides: str, prefix: tuple[str, ...] = (), env: dict | None = None,
         timeout: float = 600) -> dict:
    environment = {k: v for k, v in os.environ.items() if k not in _LIBRARY_VARIABLES}
    environment.update({numerics.ENVIRONMENT_VARIABLE: "portable", **(env or {})})
    result = subprocess.run([*prefix, sys.executable, str(CHILD), architecture, *overrides], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _machine_configurations() -> dict[str, dict]:
    configurations = {
        "as it is": {},
        "a stray ATEN_CPU_CAPABILITY=avx512": {"env": {"ATEN_CPU_CAPABILITY": "avx512"}},
        "four threads asked for (a 4-core machine's default)": {"env": {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}},
        "the libraries held to AVX2 (an AVX2-only CPU)": {
            "overrides": ("ATEN_CPU_CAPABILITY=avx2", "ONEDNN_MAX_CPU_ISA=AVX2", "MKL_ENABLE_INSTRUCTIONS=AVX2")},
    }
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) > 1:
        configurations["one core (taskset -c 0)"] = {"prefix": ("taskset", "-c", "0")}
    return configurations


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_portable_gives_the_same_bytes_whatever_the_threads_and_instructions(architecture):
    rows = {name: _fit(architecture, *c.get("overrides", ()), prefix=c.get("prefix", ()), env=c.get("env"))
            for name, c in _machine_configurations().items()}
    digests = {name: row["sha256"] for name, row in rows.items()}
    assert len(set(digests.values())) == 1, digests
    assert {(row["capability"], row["threads"], row["numerics"]) for row in rows.values()} == {("AVX2", 2, "portable")}
    expected = REFERENCE.get(_torch_version(), {}).get(architecture)
    if expected:
        assert digests["as it is"] == expected


EMULATE_ALL = "NUMERICS_EMULATE_ALL"


@pytest.mark.slow
@pytest.mark.parametrize("cpu", ["EPYC-Rome", "Haswell-v4"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_portable_gives_the_same_bytes_on_emulated_cpus_of_both_vendors(architecture, cpu):
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 is not installed (Debian: apt-get install qemu-user); .ci/run installs it")
    if architecture != "seed_cnn" and not os.environ.get(EMULATE_ALL):
        # resnet18 emulated takes 12-16 minutes per CPU on two cores: with both CPUs it would take
        # half of CI's 90-minute limit. It passed on both (docs/numerics.md); rerun it with
        # NUMERICS_EMULATE_ALL=1 python -m pytest tests/test_numerics.py -k emulated
        pytest.skip(f"resnet18 under emulation takes 12-16 min; set {EMULATE_ALL}=1 to run it")
    here = _fit(architecture)
    emulated = _fit(architecture, prefix=(qemu, "-cpu", cpu), timeout=3000)  # about 250x slower
    assert emulated["capability"] == "AVX2"
    assert emulated["sha256"] == here["sha256"], f"{cpu}: {emulated} against this machine's {here}"


def _torch_version() -> str:
    result = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                            text=True, check=True)
    return result.stdout.strip().split("+")[0]


_SAVE = """
import sys
from pathlib import Path
import lifecycle  # the numerics mode, before torch
import numpy as np
from lifecycle.models import ModelSpec, build_model
from lifecycle.training.loop import FitConfig, Samples
from lifecycle.training.stage import fit_stage
out = Path(sys.argv[1])
images = np.random.default_rng(0).integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
samples = Samples.from_images(images, np.arange(24) % 2)
spec = ModelSpec("seed_cnn", ["cat", "dog"], 16, arguments={"channels": [4]})
with fit_stage("train", log_dir=out / "live") as stage:
    model = stage.seeded(lambda: build_model(spec), 0)
    stage.fit_and_save(model, samples, samples, FitConfig(epochs=1, batch_size=8, lr=0.01, seed=0), spec,
                       out / "model", info={})
"""


@pytest.mark.parametrize("mode", ["native", "portable"])
def test_the_sidecar_records_what_the_bytes_depend_on_and_nothing_of_the_machine(mode, tmp_path):
    from lifecycle.models import SIDECAR_FILE

    environment = {k: v for k, v in os.environ.items() if k not in _LIBRARY_VARIABLES}
    subprocess.run([sys.executable, "-c", _SAVE, str(tmp_path)], cwd=ROOT, check=True, capture_output=True,
                   env={**environment, numerics.ENVIRONMENT_VARIABLE: mode})
    info = json.loads((tmp_path / "model" / SIDECAR_FILE).read_text())["info"]
    expected = {"mode": mode, "device": "cpu"}
    if mode == "portable":
        expected.update(cpu_capability="AVX2", threads=2)
    assert info["numerics"] == expected  # no vendor, model, core count or library build: those go to MLflow
    assert set(info) - {"numerics"} == {"stage", "best_epoch", "epochs", "train", "val", "world_size"}


_STAGE = """
import sys
from lifecycle.core.errors import run_stage
def main():
    if sys.argv[1:2] == ["torch"]:
        import torch  # noqa: F401
run_stage(main)
"""


@pytest.mark.parametrize("mode", ["native", "portable"])
def test_a_stage_that_used_torch_leaves_the_whole_fingerprint_outside_its_outputs(mode, tmp_path):
    """run_stage writes .numerics/<stage>-<arguments>.json for a stages.* module that loaded torch, only."""
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "stages" / "probe.py").write_text(_STAGE)
    environment = {k: v for k, v in os.environ.items() if k not in _LIBRARY_VARIABLES}
    code = ("import sys, runpy; sys.path[:0] = [sys.argv.pop(1), sys.argv.pop(1)]\n"
            "from lifecycle.core import numerics; numerics._ROOT = __import__('pathlib').Path(sys.path[0])\n"
            "runpy.run_module('stages.probe', run_name='__main__', alter_sys=True)")
    for argument in ("torch", "data"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path), str(ROOT), argument], cwd=tmp_path, check=True,
                       env={**environment, numerics.ENVIRONMENT_VARIABLE: mode})
    assert sorted(path.name for path in (tmp_path / ".numerics").iterdir()) == ["probe-torch.json"]
    found = numerics.recorded(tmp_path)["probe-torch"]
    assert found["mode"] == mode and found["device"] == "cpu"
    assert found["cpu_vendor"] and found["cpu_model"] and found["torch"] and found["mkl"] and found["onednn"]
    assert (found["cpu_capability"], found["threads"]) == (("AVX2", 2) if mode == "portable" else
                                                           (found["cpu_capability"], found["threads"]))


@pytest.mark.parametrize("entry", ["serving", "lifecycle.training.loop", "lifecycle.inference"])
def test_every_entry_point_applies_the_mode_before_torch_loads(entry):
    """The first project import (the server's package, what stages and benchmarks import) sets the mode."""
    environment = {k: v for k, v in os.environ.items() if k not in _LIBRARY_VARIABLES}
    code = f"import {entry}\nimport torch\nprint(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                            env={**environment, numerics.ENVIRONMENT_VARIABLE: "portable", "OMP_NUM_THREADS": "1"})
    assert result.stdout.split() == ["AVX2", "2"]
