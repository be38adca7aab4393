"""Check params (the first stage): refuse a bad ``params.yaml`` before DVC removes any output.

in: params.yaml (every key)   out: params.check.json (the same bytes whenever params are valid)
params: the whole params.yaml

DVC removes a stage's outputs before it runs the stage's command, so a stage that refuses a bad
value itself (train on ``lr: -1``, tune on a bad ``tune.grid``) has already lost its model, its
committed metrics and curves. This stage runs before every other one (ingest depends on its
output, and every stage descends from ingest) and checks every key: the schema
(:func:`lifecycle.core.params.load_params`, constraints across sections included) and the checks
that need torchvision or scikit-learn (architectures, tune's grid keys and scorer). A mistake
stops ``dvc repro`` / ``dvc exp run`` here, with the same one sentence the stage that reads the
key would give, and no other stage is touched.

The output is ``persist: true`` in dvc.yaml (DVC never removes it, so a refusal changes no file
but params.yaml) and constant: passing the check never changes ingest's deps, so a valid change
reruns only the stages that read the changed keys.
"""
from __future__ import annotations

from pathlib import Path

from lifecycle.core import paths
from lifecycle.core.errors import run_stage
from lifecycle.core.io import write_json_atomic
from lifecycle.core.params import load_params
from lifecycle.core.schema import PipelineParams

# Whatever the params, as long as they are valid: a fact, not a copy of them (dvc.lock has those).
CHECKED = {
    "params.yaml": "valid",
    "written_by": "the check_params stage (stages/check_params.py); the same bytes for every valid params.yaml",
}


def check_params(path: Path | None = None) -> PipelineParams:
    """The whole params.yaml, validated as every stage will read it, or a UserError naming the key."""
    params = load_params(path)
    # the checks that need torch, torchvision, scikit-learn and skorch (5 s to import), after the cheap ones
    from lifecycle.models import check_architecture
    from lifecycle.tuning import check_tune_params

    check_architecture(params.train.architecture, "train.architecture", allow_seed_cnn=True)
    check_architecture(params.finetune.architecture, "finetune.architecture", allow_seed_cnn=False)
    check_architecture(params.transfer.architecture, "transfer.architecture", allow_seed_cnn=False)
    check_tune_params(params.tune)
    return params


def main() -> None:
    check_params()
    write_json_atomic(CHECKED, paths.PARAMS_CHECK)
    print(f"check_params: {paths.relative(paths.PARAMS)} is valid")


if __name__ == "__main__":
    run_stage(main)
