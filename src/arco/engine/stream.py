"""The deterministic, resumable data stream: labeled (+ unlabeled) batches as a pure function of (seed, iteration).

An infinite sampler orders each dataset by a permutation seeded by ``(seed, stream, epoch)`` and seeds every
sample's augmentation by ``(seed, stream, iteration, slot)``, so iteration ``t`` gets the same batch whether the run
started at 0 or resumed at ``t`` — in the main process or in any DataLoader worker.

Under DDP the batch sizes are global: rank ``r`` of ``R`` takes items ``r * B/R .. (r + 1) * B/R - 1`` of the global
batch of each iteration (same order, same augmentation seeds), so the ranks together see exactly the batch one
process would, whatever ``R`` is. The labeled set (a handful of cases) is never split into per-rank subsets: every
rank draws from the whole set, in the global order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from arco._checks import ArcoError
from arco.methods.base import Batch

__all__ = ["BatchStream", "mix_seed"]


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix-style; stable across runs and platforms)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h ^= (int(v) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2)) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class _SeededItems(torch.utils.data.Dataset):
    """Item ``(index, seed)`` fetches ``dataset[index]`` with the global RNGs seeded by ``seed`` (then restored), so a
    sample's augmentation depends only on its seed."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        saved = torch.get_rng_state(), np.random.get_state(), random.getstate()  # noqa: NPY002 - on purpose
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002 - global state on purpose
        random.seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(saved[0])
            np.random.set_state(saved[1])  # noqa: NPY002 - global state on purpose
            random.setstate(saved[2])


class _StreamSampler(torch.utils.data.Sampler):
    """Batches of ``(index, seed)`` for iterations ``start..total-1``: slots ``slots`` of each global batch of
    ``batch`` items (all of them in a single process)."""

    def __init__(self, size: int, batch: int, seed: int, stream: int, start: int, total: int,
                 slots: range | None = None) -> None:  # fmt: skip
        self.size, self.batch, self.seed, self.stream, self.start, self.total = size, batch, seed, stream, start, total
        self.slots = range(batch) if slots is None else slots
        self._perm: tuple[int, list[int]] | None = None

    def _order(self, epoch: int) -> list[int]:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.stream, epoch))
            self._perm = (epoch, torch.randperm(self.size, generator=g).tolist())
        return self._perm[1]

    def batch_at(self, iteration: int) -> list[tuple[int, int]]:
        out = []
        for j in self.slots:
            k = iteration * self.batch + j
            out.append((self._order(k // self.size)[k % self.size], mix_seed(self.seed, self.stream, iteration, j)))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.total):
            yield self.batch_at(it)

    def __len__(self) -> int:
        return max(self.total - self.start, 0)


class BatchStream:
    """Labeled (+ unlabeled) batches for iterations ``start..total-1``, reproducible from ``(seed, iteration)``.

    ``batch_labeled`` / ``batch_unlabeled`` are global batch sizes; ``rank`` of ``world`` receives its slice of
    each (``batch / world`` items).
    """

    def __init__(
        self,
        labeled: Any,
        unlabeled: Any | None,
        batch_labeled: int,
        batch_unlabeled: int,
        seed: int,
        start: int,
        total: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if len(labeled) == 0:
            raise ArcoError("the labeled training set is empty; check data.labeled and the dataset folder")
        if unlabeled is not None and len(unlabeled) == 0:
            raise ArcoError(
                "this method needs unlabeled images but the unlabeled set is empty (is every training case "
                "labeled?); lower data.labeled or train the 'supervised' method"
            )

        def loader(ds: Any, batch: int, stream: int) -> torch.utils.data.DataLoader:
            if batch % world:
                raise ValueError(f"BatchStream: the global batch {batch} is not divisible by the {world} ranks")
            per = batch // world
            slots = range(rank * per, (rank + 1) * per)
            return torch.utils.data.DataLoader(
                _SeededItems(ds),
                batch_sampler=_StreamSampler(len(ds), batch, seed, stream, start, total, slots),
                num_workers=num_workers,
                pin_memory=pin_memory,
                persistent_workers=False,
                # Its own generator: creating the iterator must not draw from the global RNG (dropout), or a
                # resumed run would diverge from an uninterrupted one.
                generator=torch.Generator().manual_seed(mix_seed(seed, stream)),
            )

        self._labeled = loader(labeled, batch_labeled, 1)
        self._unlabeled = None if unlabeled is None else loader(unlabeled, batch_unlabeled, 2)

    def __iter__(self) -> Iterator[Batch]:
        unl = iter(self._unlabeled) if self._unlabeled is not None else None
        for lab in self._labeled:
            u = next(unl) if unl is not None else {}
            yield Batch(lab["image"], lab["label"].long(), u.get("image"), lab.get("position"), u.get("position"))
