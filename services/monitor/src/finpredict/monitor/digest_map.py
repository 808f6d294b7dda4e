"""A compact map from 64-bit digests to 64-bit row codes: a small dict for the newest entries and
sorted numpy runs for the rest.

A Python dict costs about 230 bytes an entry here (two int objects and the table), which the
monitor's soak showed as +1.7 MiB a minute at 100 predictions a second. Sealed runs cost 16 bytes
an entry. New entries go to the dict; when it holds ``seal_at`` entries it is sorted into a run,
and runs are merged while the newest is at least half the size of the one before it (a log-
structured merge: O(log n) runs, each entry re-sorted O(log n) times). A lookup tries the dict,
then the runs from the newest; when a key was set twice, the newest entry wins. The dict is kept
small (4,096 entries, about 1 MB): the monitor's memory then rises in small steps, not in
sawteeth of several megabytes that a short soak reads as growth.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
BLOCK_SHIFT = 32  # a code is ``block << BLOCK_SHIFT | row``


class DigestMap:
    """``digest -> code`` with dict-like reads and writes, and removal by block."""

    def __init__(self, seal_at: int = 4_096) -> None:
        self.seal_at = seal_at
        self._recent: dict[int, int] = {}
        self._runs: list[tuple[U64, U64]] = []  # (sorted keys, codes), oldest first

    def __len__(self) -> int:
        """Entries (a key set again after its first entry was sealed counts twice until the runs
        holding both merge)."""
        return len(self._recent) + sum(len(keys) for keys, _ in self._runs)

    def __contains__(self, key: int) -> bool:
        return self.get(key) is not None

    def get(self, key: int, default: int | None = None) -> int | None:
        code = self._recent.get(key)
        if code is not None:
            return code
        probe = np.uint64(key)
        for keys, codes in reversed(self._runs):
            i = int(np.searchsorted(keys, probe))
            if i < len(keys) and keys[i] == probe:
                return int(codes[i])
        return default

    def contains_many(self, keys: Sequence[int]) -> npt.NDArray[np.bool_]:
        """``[key in self for key in keys]``, one vectorised search per run (a per-key search
        costs microseconds: ingest asks this once per batch)."""
        probe = np.fromiter(keys, dtype=np.uint64, count=len(keys))
        found = np.fromiter((k in self._recent for k in keys), dtype=bool, count=len(keys))
        for run, _ in self._runs:
            at = np.searchsorted(run, probe)
            hit = at < len(run)
            hit[hit] = run[at[hit]] == probe[hit]
            found |= hit
        return found

    def __getitem__(self, key: int) -> int:
        code = self.get(key)
        if code is None:
            raise KeyError(key)
        return code

    def __setitem__(self, key: int, code: int) -> None:
        self._recent[key] = code
        if len(self._recent) >= self.seal_at:
            self.seal()

    def set_many(self, keys: Iterable[int], codes: Iterable[int]) -> None:
        """``self[k] = c`` for each pair, in order (a later pair for the same key wins)."""
        self._recent.update(zip(keys, codes, strict=True))
        if len(self._recent) >= self.seal_at:
            self.seal()

    def update(self, keys: Iterable[int], codes: Iterable[int]) -> None:
        """Sets many entries at once, straight into a run."""
        k = np.fromiter(keys, dtype=np.uint64)
        c = np.fromiter(codes, dtype=np.uint64, count=len(k))
        self._add_run(k, c)

    def seal(self) -> None:
        """Sorts the dict's entries into a run (and merges runs)."""
        if not self._recent:
            return
        n = len(self._recent)
        k = np.fromiter(self._recent.keys(), dtype=np.uint64, count=n)
        c = np.fromiter(self._recent.values(), dtype=np.uint64, count=n)
        self._recent = {}  # a new dict: the old table's memory is freed, not kept at its peak size
        self._add_run(k, c)

    def compact(self) -> None:
        """Seals the dict and merges every run into one (then each key counts once in ``len``)."""
        self.seal()
        if len(self._runs) > 1:
            keys = np.concatenate([k for k, _ in self._runs])
            codes = np.concatenate([c for _, c in self._runs])
            self._runs = [_sorted_last_wins(keys, codes)]

    def entries(self) -> tuple[U64, U64]:
        """Every key and its code (the newest entry of a key set twice), keys sorted."""
        keys = [k for k, _ in self._runs]
        codes = [c for _, c in self._runs]
        if self._recent:
            n = len(self._recent)
            keys.append(np.fromiter(self._recent.keys(), dtype=np.uint64, count=n))
            codes.append(np.fromiter(self._recent.values(), dtype=np.uint64, count=n))
        if not keys:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint64)
        return _sorted_last_wins(np.concatenate(keys), np.concatenate(codes))

    def discard_blocks(self, blocks: Collection[int]) -> int:
        """Removes every entry whose code points into one of ``blocks``; returns how many."""
        if not blocks:
            return 0
        gone = [k for k, c in self._recent.items() if c >> BLOCK_SHIFT in blocks]
        for k in gone:
            del self._recent[k]
        removed = len(gone)
        wanted = np.fromiter(blocks, dtype=np.uint64, count=len(blocks))
        runs: list[tuple[U64, U64]] = []
        for keys, codes in self._runs:
            keep = ~np.isin(codes >> np.uint64(BLOCK_SHIFT), wanted)
            removed += int(len(keys) - keep.sum())
            if keep.any():
                runs.append((keys[keep], codes[keep]))
        self._runs = runs
        return removed

    def _add_run(self, keys: U64, codes: U64) -> None:
        if len(keys) == 0:
            return
        self._runs.append(_sorted_last_wins(keys, codes))
        while len(self._runs) > 1 and 2 * len(self._runs[-1][0]) >= len(self._runs[-2][0]):
            (k1, c1), (k2, c2) = self._runs[-2], self._runs[-1]
            self._runs[-2:] = [_sorted_last_wins(np.concatenate([k1, k2]), np.concatenate([c1, c2]))]


def _sorted_last_wins(keys: U64, codes: U64) -> tuple[U64, U64]:
    """``keys`` sorted with their codes; of equal keys the last one given is kept."""
    order = np.argsort(keys, kind="stable")
    k, c = keys[order], codes[order]
    last = np.ones(len(k), dtype=bool)
    last[:-1] = k[1:] != k[:-1]
    return k[last], c[last]
