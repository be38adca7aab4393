"""The MLflow mirror: DVC's files are the truth, MLflow mirrors them. Of the stages only
``mirror`` imports it, never a model or data stage; the service (``serving/``) reads the
registry through :mod:`tracking.registry` and :mod:`tracking.mlflow_model`.

- :mod:`tracking.snapshot`: a pipeline state read from DVC's files (pure);
- :mod:`tracking.provenance`: git commit, branch, DVC experiment;
- :mod:`tracking.spool`: the local queue that makes a tracking failure lose nothing;
- :mod:`tracking.store`: which MLflow store (one resolver for the mirror, the gate and the service) and its names;
- :mod:`tracking.sink`: the only code that writes runs, logged models and registry versions;
- :mod:`tracking.flavours`: the selected model as logged models, one per flavour, reused when equal;
- :mod:`tracking.pyfunc`: the selected model logged a second time, as a pyfunc that takes
  image bytes (:mod:`tracking.image_model`, MLflow "models from code");
- :mod:`tracking.mirror`: the commands that tie them together.

The promotion gate, which moves the registry alias ``champion`` (never run by a stage):

- :mod:`tracking.gate`: score champion and candidate on one validation split, decide, record;
- :mod:`tracking.registry`: the aliases ``candidate`` and ``champion``, champion's history, tags (the only
  code that moves ``champion``);
- :mod:`tracking.mlflow_model`: an MLflow model loaded as a Predictor (the gate's and the service's);
- :mod:`tracking.promote` and :mod:`tracking.rollback`: the two commands.
"""
