"""The shared-memory frame ring: wraparound, overrun counting, per-frame fates, other processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from deepz.frame_ring import Closed, FrameRing, RingBroken

SHAPE = (16, 24)


def frame(seq: int) -> np.ndarray:
    return np.full(SHAPE, seq % 65536, np.uint16)


@pytest.fixture
def ring():
    ring = FrameRing.create(SHAPE, np.uint16, slots=4, readers=2, meta=2)
    yield ring
    ring.detach()


def test_wraparound_keeps_the_newest_items_with_their_metadata(ring):
    for seq in range(11):
        ring.put(seq, frame(seq), (seq * 0.01, 100.0 + seq))
    taken = ring.take_newest(0)
    assert taken.seq == 10 and np.all(taken.array == 10) and tuple(taken.meta) == (0.1, 110.0)
    assert ring.take(7) is not None and ring.take(6) is None  # 7..10 are held; 6 was overwritten
    with pytest.raises(TimeoutError):
        ring.take_newest(0, timeout_s=0.01)  # nothing newer than 10 for reader 0
    assert ring.take_newest(1).seq == 10  # each reader has its own place


def test_overrun_is_counted_and_every_frame_gets_a_fate(ring):
    for seq in range(10):  # nobody reads: 4 slots, so 0..5 are displaced
        assert ring.put(seq, frame(seq)) == (seq - 4 if seq >= 4 else None)
    assert ring.displaced == 6
    assert [ring.fate(s) for s in range(10)] == [False] * 6 + [None] * 4
    assert ring.take_newest(0).seq == 9  # taking 9 skips 6, 7 and 8: they are older
    assert [ring.fate(s) for s in range(6, 10)] == [False, False, False, True]
    ring.put(10, frame(10))
    ring.put(11, frame(11))
    ring.close()
    assert ring.take_newest(0).seq == 11
    with pytest.raises(Closed):
        ring.take_newest(0)
    ring.settle()  # after the readers ended, the undecided (10) was skipped; taken ones stay taken
    assert [ring.fate(s) for s in (9, 10, 11)] == [True, False, True]
    assert ring.displaced == 6  # 10 was skipped by the reader, not overwritten


def test_reader_one_never_marks_frames(ring):
    for seq in range(3):
        ring.put(seq, frame(seq))
    assert ring.take_newest(1).seq == 2
    assert [ring.fate(s) for s in range(3)] == [None, None, None]


def test_too_few_slots_for_the_readers_is_refused():
    with pytest.raises(ValueError, match="at least 4 slots"):
        FrameRing.create(SHAPE, np.uint16, slots=3, readers=2)


def _read_all(spec, out) -> None:
    """Another process: take the newest frame until closed; report (seq, intact) for each."""
    ring = FrameRing(spec)
    seen = []
    try:
        while True:
            taken = ring.take_newest(0, timeout_s=10)
            seen.append((taken.seq, bool(np.all(taken.array == taken.seq % 65536)), float(taken.meta[0])))
            time.sleep(0.002)  # slower than the producer: it has to skip
    except Closed:
        pass
    out.put(seen)
    ring.detach()


def test_another_process_reads_intact_frames_while_the_producer_never_waits():
    ctx = mp.get_context("spawn")
    ring = FrameRing.create(SHAPE, np.uint16, slots=4, readers=1, lock=ctx.Lock())
    out = ctx.Queue()
    reader = ctx.Process(target=_read_all, args=(ring.spec, out))
    reader.start()
    try:
        time.sleep(0.5)
        for seq in range(2000):
            ring.put(seq, frame(seq), (float(seq),))
            if seq % 100 == 0:
                time.sleep(0.01)
        ring.close()
        seen = out.get(timeout=30)
        reader.join(10)
        ring.settle()
        seqs = [s for s, _, _ in seen]
        assert all(intact for _, intact, _ in seen)  # no torn frame: a slot being read is never written
        assert all(meta == seq for seq, _, meta in seen)
        assert seqs == sorted(set(seqs)) and seqs[-1] == 1999  # in order, and the last frame is read
        fates = [ring.fate(s) for s in range(2000)]
        assert None not in fates
        assert {s for s in range(2000) if fates[s]} == set(seqs)  # taken exactly when read
    finally:
        reader.kill()
        ring.detach()


def _die_holding_the_lock(spec) -> None:
    spec.lock.acquire()
    os._exit(0)


def test_a_reader_that_dies_holding_the_lock_breaks_the_ring_without_blocking_the_producer():
    ctx = mp.get_context("spawn")
    ring = FrameRing.create(SHAPE, np.uint16, slots=4, readers=1, lock=ctx.Lock())
    try:
        reader = ctx.Process(target=_die_holding_the_lock, args=(ring.spec,))
        reader.start()
        reader.join(30)
        started = time.perf_counter()
        with pytest.raises(RingBroken):
            ring.put(0, frame(0), lock_timeout_s=0.05)
        assert time.perf_counter() - started < 1.0
    finally:
        ring.detach()


def test_a_waiting_producer_displaces_only_after_its_wait(ring):
    import threading

    for seq in range(4):
        ring.put(seq, frame(seq))
    threading.Timer(0.05, lambda: ring.take(0)).start()
    assert ring.put(4, frame(4), wait_s=5.0) is None  # reader 0 took item 0 meanwhile: its slot is reused
    assert ring.fate(0) is True and ring.displaced == 0
    started = time.perf_counter()
    assert ring.put(5, frame(5), wait_s=0.05) == 1  # nothing taken in time: the oldest untaken goes
    assert time.perf_counter() - started >= 0.05 and ring.displaced == 1


def test_a_ring_larger_than_the_shared_memory_folder_is_refused_clearly(monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(64_000_000, 63_000_000, 1_000_000))
    with pytest.raises(OSError, match=r"needs 4 MB but /dev/shm has 1 MB free.*--compute thread"):
        FrameRing.create((512, 512), np.uint16, slots=8)


def test_take_next_sees_every_item_in_order_and_skips_only_what_was_overwritten(ring):
    for seq in range(3):
        ring.put(seq, frame(seq))
    assert [ring.take_next(1).seq for _ in range(3)] == [0, 1, 2]
    for seq in range(3, 10):  # 4 slots: 3, 4 and 5 are overwritten before reader 1 comes back
        ring.put(seq, frame(seq))
    assert [ring.take_next(1).seq for _ in range(4)] == [6, 7, 8, 9]
    with pytest.raises(TimeoutError):
        ring.take_next(1, timeout_s=0.01)
    assert ring.take_newest(0).seq == 9  # reader 0 has its own place


def test_backlog_counts_the_items_put_since_a_readers_last_take(ring):
    assert ring.backlog(1) == 0
    for seq in range(3):
        ring.put(seq, frame(seq))
    assert ring.backlog(1) == 3 and ring.backlog(0) == 3
    ring.take_next(1)
    assert ring.backlog(1) == 2
    ring.take_newest(0)
    assert ring.backlog(0) == 0 and ring.backlog(1) == 2
