"""How the minute timer groups reminders into packs (botcore.delivery.packs.group), pure."""

from __future__ import annotations

from botcore.delivery.packs import PACK_CHARS, PACK_SIZE, PACK_SPAN, group


def test_reminders_due_within_the_span_share_a_pack_and_a_later_one_starts_the_next() -> None:
    dues = [100.0, 100.0, 100.0 + PACK_SPAN, 100.0 + PACK_SPAN + 0.001, 105.0, 105.5]
    assert group(dues, [10] * len(dues)) == [[0, 1, 2], [3], [4, 5]]


def test_a_pack_holds_at_most_its_size_and_its_characters() -> None:
    assert [len(p) for p in group([0.0] * (PACK_SIZE * 2 + 1), [1] * (PACK_SIZE * 2 + 1))] == [PACK_SIZE] * 2 + [1]
    big = PACK_CHARS // 3 + 1
    assert group([0.0] * 4, [big] * 4) == [[0, 1], [2, 3]]
    assert group([], []) == []
