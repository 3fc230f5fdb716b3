"""Event ids (NT1): random version-4 UUIDs in their text form, as receivers dedupe on."""

from __future__ import annotations

import uuid

from storage.outbox import new_event_id


def test_event_ids_are_version_4_uuids_in_canonical_text_and_never_repeat() -> None:
    ids = [new_event_id() for _ in range(3 * 256 + 7)]  # across refills of the pool
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower case, dashes where uuid puts them
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # Every variant nibble turns up: the two random bits under the fixed ones are used.
    assert {text[19] for text in ids} == set("89ab")
