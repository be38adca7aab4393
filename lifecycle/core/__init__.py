"""The core every stage shares, listed in dvc.yaml as one folder dep (``lifecycle/core``):
errors (the one user-error sentence), paths (every path), io (atomic, deterministic writers),
params and schema (the one validated loader), progress (bars), images (the one decode path),
parallel (one function over many items on every core, in order).
Nothing here imports torch, so the data stages start in a fraction of a second."""
