"""What each event does besides changing state: money, child entities, cascades.

Effects run inside the event's transaction, after its machine accepted the event; an
error here rolls the whole event back. Money moves only through `Work.deposit` and
`Work.pay_out`, which write the ledger and the contract's totals together (ES1, ES2).
Importing this package registers every effect (`workflows/registry.py`).
"""

from workflows.effects import change_requests, contracts, milestones, proposals, refunds

__all__ = ["change_requests", "contracts", "milestones", "proposals", "refunds"]
