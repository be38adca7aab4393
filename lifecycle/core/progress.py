"""Progress bars for loops a person waits for: shown on a terminal, silent in CI and logs."""
from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

try:
    from tqdm.auto import tqdm
except ImportError:  # benchmarks/training_throughput.py runs where only PyTorch and its basics are installed
    tqdm = None

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
    """Wrap ``items`` in a tqdm bar that disables itself when stderr is not a terminal
    (``items`` as they are where tqdm is not installed)."""
    if tqdm is None:
        return items
    return tqdm(items, desc=desc, total=total, disable=None, leave=False, dynamic_ncols=True)
