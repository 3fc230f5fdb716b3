"""How the console names things people read: no internal names."""

from __future__ import annotations

from escrowflow.console.rendering import event_name, readable


def test_a_reminder_reads_as_when_before_what_not_its_internal_name() -> None:
    assert event_name("remind:expire:P1D") == "reminder 1 day before expire"
    long = "reminder 3 days 12 hours before auto approve"
    assert event_name("remind:auto_approve:P3DT12H") == long
    assert event_name("refund_by_default") == "refund by default"


def test_a_history_payload_reads_as_money_and_changes_not_as_python() -> None:
    change = {"amount": {"before": 50_000, "after": 60_000}, "title": {"before": "A", "after": "B"}}
    assert readable(change, "changes", "EUR") == "amount 500.00 EUR → 600.00 EUR; title A → B"
    assert readable(120_000, "to_client", "JPY") == "120,000 JPY"
    assert readable(["a", "b"], "order", "USD") == "a, b"
    assert readable("2026-01-05T09:00:00+00:00", "due_at", "USD") == "2026-01-05 09:00 UTC"
    assert readable(None, "reason", "USD") == "—"
