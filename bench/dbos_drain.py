"""The auto-approval workload on DBOS, for comparison (run by bench/deadlines.py).

One DBOS workflow per milestone waits on `recv(timeout)`; when the timeout passes with
no release, it auto-approves (a step that records the approval). N workflows are started
with the same short timeout; the rate is N over the time from the timeout to the last
approval. Needs an interpreter with `dbos` installed: it is not a project dependency.

    python bench/dbos_drain.py N SECONDS_UNTIL_DUE DATABASE_URL
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's `http` for every script in here.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import time

from dbos import DBOS, DBOSConfig

approved: list[float] = []


@DBOS.step()
def auto_approve(milestone: int) -> int:
    approved.append(time.monotonic())
    return milestone


@DBOS.workflow()
def milestone_review(milestone: int, due_epoch: float) -> str:
    # All fall due at the same moment, as an overdue backlog does.
    if DBOS.recv("release", timeout_seconds=max(0.0, due_epoch - time.time())) is not None:
        return "released"
    auto_approve(milestone)
    return "auto-approved"


def main() -> None:
    count, timeout, url = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    config: DBOSConfig = {"name": "escrowflow-bench", "system_database_url": url}
    DBOS(config=config)
    DBOS.launch()
    # TIMEOUT must exceed the time it takes to start them all.
    due_epoch = time.time() + timeout
    due = time.monotonic() + timeout
    handles = [DBOS.start_workflow(milestone_review, i, due_epoch) for i in range(count)]
    assert time.monotonic() < due, "raise TIMEOUT: the workflows took longer to start"
    for handle in handles:
        handle.get_result()
    done = max(approved) if approved else time.monotonic()
    rate = count / max(done - due, 1e-3)
    print(
        f"dbos: {count} auto-approvals falling due at once, all fired "
        f"{done - due:.1f} s later: {rate:.0f} deadlines/s"
    )
    print(f"RATE {rate:.1f}")
    DBOS.destroy()


if __name__ == "__main__":
    main()
