"""The label index's digest map: the same answers as a dict, across its recent entries and sealed runs."""

from __future__ import annotations

import random

import numpy as np

from finpredict.monitor.digest_map import BLOCK_SHIFT, DigestMap


def test_reads_writes_and_removal_by_block_match_a_dict() -> None:
    rng = random.Random(7)
    m, ref = DigestMap(seal_at=64), dict[int, int]()
    for i in range(5_000):
        key = rng.getrandbits(64)
        if i % 10 == 0 and ref:  # set an existing key again: the newest code wins, sealed or not
            key = rng.choice(list(ref))
        code = (i // 500) << BLOCK_SHIFT | i
        m[key], ref[key] = code, code
    assert len(m._runs) > 1, "several runs were sealed"
    assert len(m._runs) < 12, "runs merge: O(log n) of them"
    for key, code in ref.items():
        assert m.get(key) == code
        assert m[key] == code
        assert key in m
    absent = [rng.getrandbits(64) for _ in range(200)]
    assert not any(k in m for k in absent)
    probe = [*ref][:300] + absent
    assert m.contains_many(probe).tolist() == [True] * 300 + [False] * 200
    m.compact()
    assert len(m._runs) == 1
    assert len(m) == len(ref)  # after merging, each key once
    assert all(m.get(k) == c for k, c in ref.items())
    removed = m.discard_blocks({0, 3})
    gone = [k for k, c in ref.items() if c >> BLOCK_SHIFT in (0, 3)]
    assert removed == len(gone) > 0
    assert all(k not in m for k in gone)
    assert all(m.get(k) == c for k, c in ref.items() if c >> BLOCK_SHIFT not in (0, 3))


def test_bulk_update_goes_straight_to_a_run_and_full_width_keys_survive() -> None:
    m = DigestMap()
    keys = np.array([2**64 - 1, 0, 2**63, 12345], dtype=np.uint64)
    codes = np.arange(4, dtype=np.uint64) | np.uint64(7 << BLOCK_SHIFT)
    m.update(keys, codes)
    assert [m.get(int(k)) for k in keys] == [int(c) for c in codes]
    assert m._recent == {}
    m[2**64 - 1] = 99  # a newer entry for the same key wins over the run's
    assert m.get(2**64 - 1) == 99
    assert m.discard_blocks({7}) == 4  # the run's four entries (the stale copy included) ...
    assert m.get(2**64 - 1) == 99  # ... but not the newer entry, which points into block 0


def test_entries_list_each_key_once_with_its_newest_code() -> None:
    m = DigestMap(seal_at=4)
    m.set_many(range(1, 11), range(101, 111))  # sealed into runs on the way
    m.set_many([3, 12], [203, 212])  # a newer code for 3, in the recent dict
    keys, codes = m.entries()
    expected = {k: 100 + k for k in range(1, 11)} | {3: 203, 12: 212}
    assert dict(zip(keys.tolist(), codes.tolist(), strict=True)) == expected
    assert keys.tolist() == sorted(expected)
    assert [len(a) for a in DigestMap().entries()] == [0, 0]
