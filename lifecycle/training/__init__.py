"""Training, in four modules: ``runtime`` (process group, device, seeds), ``loop`` (the one
:func:`~lifecycle.training.loop.fit`), ``log`` (DVCLive curves, moved into place when done)
and ``stage`` (what the four training stages share: fit, log, save on rank 0)."""
