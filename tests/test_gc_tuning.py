"""The collector settings used for bulk work are scoped: they never leak out of the block."""

import gc

import pytest

from syncbridge.gc_tuning import BULK_THRESHOLDS, bulk_gc


def test_thresholds_and_freeze_apply_inside_and_are_restored_after() -> None:
    before = gc.get_threshold()
    with bulk_gc():
        assert gc.get_threshold() == BULK_THRESHOLDS
        assert gc.get_freeze_count() > 0
        with bulk_gc():  # nested use keeps the outer settings
            assert gc.get_threshold() == BULK_THRESHOLDS
        assert gc.get_threshold() == BULK_THRESHOLDS
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_settings_are_restored_when_the_body_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), bulk_gc():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_cyclic_garbage_is_still_collected_inside_the_block() -> None:
    class Node:
        pass

    with bulk_gc():
        for _ in range(200_000):  # 400,000 objects in two-object cycles
            a, b = Node(), Node()
            a.other, b.other = b, a  # type: ignore[attr-defined]
        del a, b
        uncollected = sum(isinstance(o, Node) for o in gc.get_objects())
    assert uncollected < 200_000  # collections kept running: memory stays bounded
