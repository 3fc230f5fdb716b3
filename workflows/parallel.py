"""Work on many items at once, each in a transaction of its own (a terms plan's
contracts, a bulk action's deadlines)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any


def each_in_parallel(
    work: Callable[[Any], None],
    items: list[Any],
    threads: int,
    on_progress: Callable[[int, int], None] | None,
) -> None:
    """`work(item)` for every item, on `threads` threads, each item its own transaction.
    The first error (or one raised by `on_progress`, called here as items finish) stops
    it: items not started are left, those started finish."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            for done, future in enumerate(as_completed(futures), 1):
                future.result()
                if on_progress is not None:
                    on_progress(done, len(items))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
