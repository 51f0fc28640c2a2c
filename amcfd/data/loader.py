"""DataLoaders whose order and augmentation are a function of (seed, rank, sample position).

That makes a run resumed at iteration N see exactly the batches an uninterrupted run would
have seen, whatever the number of workers: every sample is drawn with its own seed.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

_MIX = 0x9E3779B97F4A7C15


def sample_seed(seed: int, rank: int, position: int) -> int:
    """A 63-bit seed for the sample at ``position`` of rank ``rank``'s stream."""
    return (seed * 1_000_003 + rank * 7_919 + position * _MIX) % (2**63 - 1)


class SeededSamples(Dataset):
    """Wraps a dataset: item ``(index, seed)`` is ``dataset[index]`` drawn with torch, numpy and
    python RNGs seeded by ``seed``; the caller's RNG states are restored afterwards."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        np_state, py_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)


class InfiniteShardedSampler(Sampler):
    """Endless shuffled epochs split across ranks, yielding ``(index, sample_seed)``.

    Epoch e is a permutation seeded by (seed, e); rank r takes every world-th entry, so all ranks
    see the same number of samples. ``start`` skips that many samples of this rank's stream
    (resume at iteration N: start = N * batch_size).
    """

    def __init__(self, num_items: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, start: int = 0):
        if num_items <= 0:
            raise ValueError("the training dataset is empty")
        self.num_items, self.seed, self.rank, self.world = num_items, seed, rank, world_size
        self.shuffle, self.start = shuffle, start
        self.per_rank = max(1, num_items // world_size)

    def _epoch_indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 65_537 + epoch)
            order = torch.randperm(self.num_items, generator=g).tolist()
        else:
            order = list(range(self.num_items))
        while len(order) < self.per_rank * self.world:  # fewer items than ranks
            order += order
        return order[self.rank::self.world][: self.per_rank]

    def __iter__(self):
        position = self.start
        while True:
            epoch, offset = divmod(position, self.per_rank)
            indices = self._epoch_indices(epoch)
            for index in indices[offset:]:
                yield index, sample_seed(self.seed, self.rank, position)
                position += 1

    def __len__(self) -> int:  # one epoch of this rank; the sampler itself never ends
        return self.per_rank


def train_loader(dataset: Dataset, loader_opts: dict, seed: int, rank: int, world: int,
                 start_iter: int, pin_memory: bool) -> DataLoader:
    """Endless training loader resuming at ``start_iter`` (batches of loader_opts['batch_size'])."""
    batch_size = loader_opts["batch_size"]
    sampler = InfiniteShardedSampler(len(dataset), seed, rank, world, start=start_iter * batch_size)
    workers = loader_opts["num_workers"]
    return DataLoader(SeededSamples(dataset), batch_size=batch_size, sampler=sampler, drop_last=True,
                      num_workers=workers, pin_memory=pin_memory and loader_opts["pin_memory"],
                      persistent_workers=workers > 0 and loader_opts["persistent_workers"],
                      prefetch_factor=loader_opts["prefetch_factor"] if workers > 0 else None,
                      generator=torch.Generator().manual_seed(seed))  # leaves the global RNG alone


def eval_loader(dataset: Dataset, loader_opts: dict, rank: int, world: int) -> DataLoader:
    """This rank's share (items rank, rank+world, ...) of a validation set, one image per batch."""
    share = Subset(dataset, list(range(rank, len(dataset), world)))
    return DataLoader(share, batch_size=1, shuffle=False, num_workers=loader_opts["num_workers"])
