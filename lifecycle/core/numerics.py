"""CPU numerics: ``native`` (the libraries' fastest kernels for this CPU) or ``portable`` (the
same bytes on any x86-64 CPU with AVX2, whatever its vendor, wider instructions or core count).

The numeric libraries read their switches when they load or first run, so the mode must be
in the environment before torch is imported. ``lifecycle/__init__.py`` calls :func:`apply`,
so every entry point that imports the package first gets it: the stages (also one process
per rank under ``torchrun``), the server, the benchmarks and the tests. The mode comes from
the environment variable ``LIFECYCLE_NUMERICS`` if set (it wins), else from the top-level
``numerics`` key of the repository's ``params.yaml`` (read with PyYAML only; validated by
:mod:`lifecycle.core.schema`), else ``native``.

- ``native``: nothing is set; today's behaviour, byte for byte.
- ``portable``: what docs/numerics.md found necessary (evidence: ../shared/tools/numerics_probe.py,
  its ``avx2-mklcompat-fused`` mode, and tests/test_numerics.py):

  - ``ATEN_CPU_CAPABILITY=avx2``: ATen's vector kernels at AVX2 width, not AVX-512;
  - ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN's convolutions likewise (no AVX-512, no AMX);
  - ``MKL_CBWR=COMPATIBLE``: MKL's vendor-neutral code path. MKL otherwise picks its matrix
    multiply and vector math (``sqrt``, ``exp``, ``log``) by CPU *vendor*, so an AMD CPU and
    an Intel one differ even when both are held to AVX2;
  - Adam's fused kernel (:func:`adam_options`): the default (``foreach``) Adam calls MKL's
    vector ``sqrt``, which differs by vendor even in COMPATIBLE mode; the fused kernel does not;
  - a fixed thread count, :data:`PORTABLE_THREADS`, whatever the machine's core count:
    oneDNN and MKL split reductions by thread, so the thread count is part of the result
    (the probe: 1 and 2 threads agree, 3 and 4 do not). ``OMP_NUM_THREADS`` and
    ``MKL_NUM_THREADS`` are set, so torch starts with that many intra-op threads.

  In portable mode these values are forced, over any value already in the environment: a
  stray ``ATEN_CPU_CAPABILITY=avx512`` must not silently break the guarantee.

Provenance has two parts, so that two machines that compute the same bytes commit the same files:

- :func:`determinants`, in every model sidecar (a DVC output): what the bytes depend on and
  the machine does not: the mode and the device type, plus in portable mode the kernel width
  and thread count it pins;
- :func:`fingerprint`, the whole machine (CPU vendor and model, the capability in use, the
  torch, MKL and oneDNN versions, threads), which :func:`record` writes per stage under
  ``.numerics/`` (gitignored, no DVC output) and the MLflow mirror copies into its run's tags.
"""
from __future__ import annotations

import json
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any, Literal

Mode = Literal["native", "portable"]
MODES: tuple[str, ...] = ("native", "portable")
DEFAULT: Mode = "native"
ENVIRONMENT_VARIABLE = "LIFECYCLE_NUMERICS"
PORTABLE_THREADS = 2
PORTABLE_ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "COMPATIBLE",
    "OMP_NUM_THREADS": str(PORTABLE_THREADS),
    "MKL_NUM_THREADS": str(PORTABLE_THREADS),
}
_ROOT = Path(__file__).resolve().parents[2]
_PARAMS = _ROOT / "params.yaml"
RECORDS = ".numerics"  # per-stage fingerprints, relative to a repository root (gitignored)
_applied: str = DEFAULT  # what apply() last set in this process


def configured(params_file: Path | None = None) -> str:
    """The mode: ``$LIFECYCLE_NUMERICS``, else params.yaml's ``numerics``, else native.

    A file that is missing, unreadable or not a mapping gives the default here; the params
    loader (:func:`lifecycle.core.params.load_params`) is what reports a bad file or value.
    """
    chosen = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if chosen:
        return chosen
    try:
        import yaml

        loaded = yaml.safe_load(Path(params_file or _PARAMS).read_text())
    except Exception:  # noqa: BLE001 - reported by the params loader, with the file's name
        return DEFAULT
    value = loaded.get("numerics", DEFAULT) if isinstance(loaded, dict) else DEFAULT
    return value if isinstance(value, str) else DEFAULT


def apply(mode: str | None = None) -> str:
    """Put ``mode``'s switches in the environment (before torch loads) and return the mode.

    An unknown mode raises ValueError naming the variable or key it came from. The mode itself
    is not written to ``$LIFECYCLE_NUMERICS``: a child process (a stage run by a test, in a
    copy of the repository with other params) reads its own params.yaml, as torchrun's workers do.
    """
    global _applied
    mode = mode or configured()
    if mode not in MODES:
        source = ENVIRONMENT_VARIABLE if os.environ.get(ENVIRONMENT_VARIABLE, "").strip() else "params.yaml: 'numerics'"
        raise ValueError(f"{source} is {mode!r}; it must be one of {', '.join(MODES)}")
    if mode == "portable":
        os.environ.update(PORTABLE_ENVIRONMENT)
    _applied = mode
    return mode


def current() -> str:
    """The mode this process applied (native if the package never applied one)."""
    return _applied


def adam_options() -> dict[str, Any]:
    """Keyword arguments for ``torch.optim.Adam`` in the current mode: portable uses the fused kernel."""
    return {"fused": True} if current() == "portable" else {}


def check_torch() -> None:
    """In portable mode, fail loudly if torch was loaded before the switches were set.

    Called where training starts; a process that imported torch before ``lifecycle`` would
    otherwise compute native bytes while claiming portable ones.
    """
    if current() != "portable":
        return
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    threads = torch.get_num_threads()
    if capability != "AVX2" or threads != PORTABLE_THREADS:
        raise RuntimeError(
            f"numerics is portable but torch runs {capability} kernels on {threads} threads "
            f"(want AVX2 on {PORTABLE_THREADS}): torch was imported before the lifecycle package, "
            "or something changed its thread count")


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def determinants(device: str | None = None) -> dict[str, Any]:
    """What a model's bytes depend on and the machine does not: written into every sidecar.

    Native: the mode and device. Portable on a CPU adds what it pins (AVX2 kernels on
    :data:`PORTABLE_THREADS` threads), the same on every machine that honours it.
    """
    device = device or _device()
    fixed: dict[str, Any] = {"mode": current(), "device": device}
    if current() == "portable" and device == "cpu":
        fixed.update(cpu_capability="AVX2", threads=PORTABLE_THREADS)
    return fixed


def _cpu_identity() -> tuple[str, str]:
    """The CPU's vendor and model name (``/proc/cpuinfo`` on Linux, else ``platform``)."""
    vendor = model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "vendor_id" and not vendor:
                vendor = value.strip()
            elif key == "model name" and not model:
                model = value.strip()
    except OSError:
        pass
    return vendor or platform.machine(), model or platform.processor() or platform.machine()


def fingerprint(device: str | None = None) -> dict[str, Any]:
    """This process's whole numerics fingerprint: mode, device, CPU, kernels, library versions, threads."""
    import torch

    device = device or _device()
    vendor, model = _cpu_identity()
    config = torch.__config__.show()  # the build's own report: no public getter for MKL's or oneDNN's version
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    onednn = re.search(r"(?:MKL-DNN|oneDNN) v(\S+)", config)
    found = {
        "mode": current(),
        "device": device if device == "cpu" else f"{device} {torch.cuda.get_device_name()}",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_vendor": vendor,
        "cpu_model": model,
        "cpu_count": os.cpu_count() or 0,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "mkl": mkl.group(1) if mkl else "",
        "onednn": onednn.group(1) if onednn else "",
        "python": platform.python_version(),
    }
    if device == "cuda":
        found["cuda"] = torch.version.cuda or ""
    return found


def record(stage: str, root: Path | None = None) -> Path | None:
    """Write this process's :func:`fingerprint` to ``.numerics/<stage>.json`` if it used torch.

    Called by :func:`lifecycle.core.errors.run_stage` when a stage succeeds; a stage that never
    imported torch (the data stages) computed nothing this describes. Never fails the stage.
    """
    if "torch" not in sys.modules:
        return None
    path = Path(root or _ROOT) / RECORDS / f"{stage}.json"
    try:
        path.parent.mkdir(exist_ok=True)
        # not lifecycle.core.io: it imports errors, which calls this (an import cycle); a torn
        # record is only local state, which recorded() skips, but a rename keeps it whole anyway
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps({"stage": stage, **fingerprint()}, indent=2, sort_keys=True) + "\n")
        os.replace(partial, path)
    except OSError as error:
        print(f"warning: could not record the numerics fingerprint in {path}: {error}", file=sys.stderr)
        return None
    return path


def recorded(root: Path) -> dict[str, dict[str, Any]]:
    """The fingerprints :func:`record` left in ``root``: stage -> fingerprint (unreadable ones skipped)."""
    found = {}
    for path in sorted((Path(root) / RECORDS).glob("*.json")):
        try:
            found[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return found
