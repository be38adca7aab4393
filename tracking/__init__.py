"""The MLflow mirror: DVC's files are the truth, MLflow mirrors them. Imported by the
``mirror`` stage alone (and tests), never by a model or data stage.

- :mod:`tracking.snapshot`: a pipeline state read from DVC's files (pure);
- :mod:`tracking.provenance`: git commit, branch, DVC experiment;
- :mod:`tracking.spool`: the local queue that makes a tracking failure lose nothing;
- :mod:`tracking.sink`: the only code that writes runs and models to MLflow;
- :mod:`tracking.flavours`: the selected model as logged models, one per flavour, reused when equal;
- :mod:`tracking.pyfunc`: the selected model logged a second time, as a pyfunc that takes
  image bytes (:mod:`tracking.image_model`, MLflow "models from code");
- :mod:`tracking.mirror`: the commands that tie them together.

The promotion gate, which moves the registry alias ``champion`` (never run by a stage):

- :mod:`tracking.gate`: score champion and candidate on one validation split, decide, record;
- :mod:`tracking.registry`: the aliases ``candidate`` and ``champion``, champion's history, tags;
- :mod:`tracking.promote` and :mod:`tracking.rollback`: the two commands.
"""
