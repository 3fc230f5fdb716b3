"""What each guard says when it refuses an event: the message of every refusal code, in
one place (a guard names its code; see :func:`workflows.lifecycle.guard`).

A message is formatted with the contract and the entity's row, e.g. ``{contract[id]}``;
it names the thing and what to do instead.
"""

from __future__ import annotations

REFUSALS: dict[str, str] = {
    "contract_closed": (
        "contract {contract[id]} is {contract[state]}: milestones can only be changed or "
        "funded on an offer or an active contract"
    ),
    "contract_not_active": "contract {contract[id]} is {contract[state]}, not active",
    "contract_not_accepted": (
        "contract {contract[id]} is {contract[state]}: payment can be released only once the "
        "freelancer has accepted it"
    ),
    "not_fixed_price": (
        "contract {contract[id]} is an {contract[kind]} contract: milestones exist only on "
        "fixed-price contracts"
    ),
    "proposal_pending": (
        "proposal {contract[open_proposal_id]} is waiting for the client: accept or decline "
        "it before changing milestones"
    ),
    "escrow_still_held": "contract {contract[id]} still holds escrow: release or refund it first",
    "refund_pending": (
        "refund {contract[open_refund_id]} is still open on this contract: wait for it to be "
        "settled"
    ),
    "milestone_already_active": (
        "milestone {contract[active_milestone_id]} of contract {contract[id]} is still "
        "active: release or refund it before funding another"
    ),
    "escrow_already_full": "milestone {row[id]} already holds its full amount in escrow",
    "change_request_pending": (
        "change request {row[open_change_request_id]} is already pending on milestone "
        "{row[id]}: edit or withdraw it instead"
    ),
}
