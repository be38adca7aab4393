"""Progress bars for loops a person waits for: shown on a terminal, silent in CI and logs."""
from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
    """Wrap ``items`` in a tqdm bar that disables itself when stderr is not a terminal."""
    return tqdm(items, desc=desc, total=total, disable=None, leave=False, dynamic_ncols=True)
