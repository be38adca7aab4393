"""The library the pipeline stages share: one module per concern.

A stage script in ``stages/`` is a thin shell: it reads its params through
:mod:`lifecycle.params`, calls the pure logic in one module here, and writes its outputs
through :mod:`lifecycle.io`. Paths live in :mod:`lifecycle.paths` alone.
"""
