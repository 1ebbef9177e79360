"""The one progress-bar helper: every long-running function with ``progress=True`` uses it."""

from __future__ import annotations

from typing import Any


def progress_bar(total: int, enabled: bool, label: str, unit: str) -> Any:
    """A tqdm bar over ``total`` units, or None when not ``enabled`` (tqdm is imported only then).

    Callers update it with ``bar.update(k)`` and close it with ``bar.close()`` when it is not None.

    Examples
    --------
    >>> progress_bar(10, False, "solve", "tile") is None
    True
    """
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit=unit)
