"""One standalone script per DVC stage; run as ``python -m stages.<name>`` from the repo root."""
