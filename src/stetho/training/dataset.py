"""Training data: clips → cropped waveforms and proxy labels, reproducible across processes.

Randomness is per sample, never per process: the crop of training sample ``i`` in epoch ``e`` is
drawn from a generator seeded with ``(seed, e, i)``, and the shuffling of epoch ``e`` from
``(seed, e)``. :class:`GlobalBatchSampler` then hands each process its shard of every *global*
batch, so one process with batch B and N processes with B/N each see the same samples with the
same crops, whatever the number of DataLoader workers::

    ds = ClipDataset(clips, sample_rate=16000, class_map=cmap, crop_samples=32000, seed=13711)
    sampler = GlobalBatchSampler(len(ds), batch_size=8, seed=13711, epoch=0, rank=0, world_size=1)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_batch)
    for batch in loader:  # {"wave": (b, n), "label": (b,), "index": (b,)}
        ...

Decoded waveforms are cached in memory (LRU, bounded in bytes) so later epochs skip decoding and
resampling.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from stetho.data import Clip, audio_info, load_audio
from stetho.model.labels import ClassMap
from stetho.model.proxy import ProxyTask, apply_transform, source_length

__all__ = [
    "ClipDataset",
    "GlobalBatchSampler",
    "WaveformCache",
    "collate_batch",
    "global_batch_sizes",
    "resolve_crop_samples",
    "sample_rng",
]

logger = logging.getLogger(__name__)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one training sample in one epoch (independent of processes)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index), 0x5A11])


class WaveformCache:
    """Thread-safe LRU cache of decoded mono waveforms, bounded by ``max_bytes``.

    Args:
        max_bytes: Memory bound; 0 disables caching.
    """

    def __init__(self, max_bytes: int = 2048 << 20) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started with spawn/forkserver pickle the dataset: a lock cannot be
        # pickled, and shipping the cached waveforms to every worker would be wasteful.
        state = self.__dict__.copy()
        del state["_lock"]
        state["_items"] = OrderedDict()
        state["_bytes"] = 0
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        return self._bytes

    def load(self, path: str | Path, sample_rate: int) -> np.ndarray:
        """Mono float32 waveform (N,) of ``path`` at ``sample_rate`` (from the cache if present)."""
        key = (str(path), int(sample_rate))
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        wave, _ = load_audio(path, sr=sample_rate)  # (N,) float32
        wave.setflags(write=False)
        if wave.nbytes <= self.max_bytes:
            with self._lock:
                if key not in self._items:
                    self._items[key] = wave
                    self._bytes += wave.nbytes
                while self._bytes > self.max_bytes and self._items:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.nbytes
        return wave


def resolve_crop_samples(clips: Sequence[Clip], sample_rate: int, seconds: float | None) -> int:
    """Training crop length in samples.

    Args:
        clips: Training clips.
        sample_rate: Backbone rate.
        seconds: Crop length; ``None`` = the shortest clip (read from the file headers), so that
            every batch has one length and the choice does not depend on batch composition.
    """
    if seconds is not None:
        return max(1, round(seconds * sample_rate))
    if not clips:
        raise ValueError("cannot size crops without clips")
    shortest = min(info.frames / info.samplerate for info in (audio_info(c.path) for c in clips))
    n = max(1, math.floor(shortest * sample_rate))
    logger.info("whole-clip training: crops of %d samples (shortest clip %.3f s)", n, shortest)
    return n


class ClipDataset(Dataset[dict[str, Any]]):
    """Waveform crops and proxy labels of training clips.

    Items are addressed as ``(epoch, index)`` (what :class:`GlobalBatchSampler` yields) or as a
    plain ``index`` (epoch 0).

    Args:
        clips: Training clips (normal sounds).
        sample_rate: Rate the backbone expects; audio is resampled to it.
        class_map: Proxy classes (``label`` = ``class_map.index(clip)``); ``None`` gives -1.
        crop_samples: Crop length; ``None`` returns whole clips (variable length).
        seed: Base seed of the per-sample crops.
        cache: Shared waveform cache (default: a new 2 GiB cache).
        proxy: Self-supervised proxy task (not in the paper): the dataset then holds every clip
            under every variant of ``proxy`` (sample ``i`` = clip ``i % N``, variant ``i // N``)
            plus the outlier samples, labelled with ``proxy.label``; ``class_map`` is ignored.
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        sample_rate: int,
        class_map: ClassMap | None = None,
        *,
        crop_samples: int | None = None,
        seed: int = 0,
        cache: WaveformCache | None = None,
        proxy: ProxyTask | None = None,
    ) -> None:
        self.clips = list(clips)
        self.sample_rate = int(sample_rate)
        self.crop_samples = crop_samples
        self.seed = int(seed)
        self.cache = cache if cache is not None else WaveformCache()
        self.proxy = proxy
        if proxy is not None:
            class_map = proxy.base
        self.labels = [class_map.index(c) if class_map is not None else -1 for c in self.clips]

    def __len__(self) -> int:
        if self.proxy is not None:
            return self.proxy.num_samples(len(self.clips))
        return len(self.clips)

    def load(self, index: int) -> np.ndarray:
        """The whole waveform (N,) of clip ``index`` at :attr:`sample_rate`."""
        return self.cache.load(self.clips[index].path, self.sample_rate)

    def crop(
        self,
        wave: np.ndarray,
        epoch: int,
        index: int,
        length: int | None = None,
        path: Path | None = None,
    ) -> np.ndarray:
        """The random crop of sample ``index`` in ``epoch`` (repeat-padded if the clip is short).

        ``length`` overrides :attr:`crop_samples` (transformations that change the speed);
        ``path`` names the file in errors (default: clip ``index``'s).
        """
        n = self.crop_samples if length is None else length
        if n is None:
            return wave
        if wave.shape[0] < n:
            if wave.shape[0] == 0:
                source = path if path is not None else self.clips[index % len(self.clips)].path
                raise ValueError(f"{source}: empty waveform")
            wave = np.tile(wave, -(-n // wave.shape[0]))
        start = int(sample_rng(self.seed, epoch, index).integers(0, wave.shape[0] - n + 1))
        return wave[start : start + n]

    def _proxy_sample(self, epoch: int, index: int) -> tuple[np.ndarray, int]:
        """Waveform and label of sample ``index`` of the proxy task."""
        assert self.proxy is not None
        where = self.proxy.locate(index, len(self.clips))
        if where is None:  # outlier exposure
            path = self.proxy.outlier_file(self.seed, epoch, index)
            wave = self.crop(self.cache.load(path, self.sample_rate), epoch, index, path=path)
            label = self.proxy.outlier_label
            return wave, -1 if label is None else label
        clip, variant = where
        name = self.proxy.variants[variant]
        whole = self.load(clip)
        n = self.crop_samples if self.crop_samples is not None else whole.shape[0]
        need = source_length(name, n, self.proxy.config)
        wave = self.crop(whole, epoch, index, need)
        wave = apply_transform(name, wave, n, self.sample_rate, self.proxy.config)
        return wave, self.proxy.label(self.labels[clip], variant)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = (0, item) if isinstance(item, int | np.integer) else item
        index = int(index)
        if self.proxy is not None:
            wave, label = self._proxy_sample(int(epoch), index)
        else:
            wave, label = self.crop(self.load(index), int(epoch), index), self.labels[index]
        return {
            "wave": torch.from_numpy(np.array(wave, dtype=np.float32)),  # (n,)
            "label": label,
            "index": index,
        }


def collate_batch(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack items into ``{"wave": (b, n), "label": (b,), "index": (b,)}``."""
    if not items:
        return {
            "wave": torch.zeros(0, 0),
            "label": torch.zeros(0, dtype=torch.long),
            "index": torch.zeros(0, dtype=torch.long),
        }
    lengths = {it["wave"].shape[0] for it in items}
    if len(lengths) != 1:
        raise ValueError(
            f"cannot batch waveforms of different lengths {sorted(lengths)}; set a crop"
        )
    return {
        "wave": torch.stack([it["wave"] for it in items]),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
    }


def global_batch_sizes(n: int, batch_size: int, world_size: int = 1) -> list[int]:
    """Sizes of the global batches of one epoch.

    A final partial batch is kept when every process gets at least one sample of it (always for
    one process), otherwise dropped.
    """
    sizes = [batch_size] * (n // batch_size)
    rest = n % batch_size
    if rest and rest >= world_size:
        sizes.append(rest)
    return sizes


class GlobalBatchSampler(Sampler[list[tuple[int, int]]]):
    """This process's shard of each global batch of one epoch, as ``(epoch, index)`` pairs.

    The epoch's order is a permutation seeded with ``(seed, epoch)``; global batch ``b`` is
    ``order[b·B : (b+1)·B]`` and process ``r`` of ``W`` takes its items ``r, r+W, r+2W, …``.

    Args:
        n: Dataset size.
        batch_size: Global batch size B.
        seed: Shuffling seed.
        epoch: Epoch number.
        rank: This process's rank.
        world_size: Number of processes W.
        start_step: Skip the first global batches (resuming mid-epoch).
        shuffle: Shuffle (True) or keep the dataset order.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        shuffle: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is out of range for world size {world_size}")
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world_size, self.start_step, self.shuffle = (
            rank,
            world_size,
            start_step,
            shuffle,
        )
        self.sizes = global_batch_sizes(n, batch_size, world_size)

    def order(self) -> np.ndarray:
        """The epoch's sample order (n,)."""
        if not self.shuffle:
            return np.arange(self.n)
        rng = np.random.default_rng([int(self.seed) & 0xFFFFFFFF, int(self.epoch), 0xBA7C4])
        return rng.permutation(self.n)

    def __len__(self) -> int:
        return max(0, len(self.sizes) - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.order()
        for b in range(self.start_step, len(self.sizes)):
            batch = order[b * self.batch_size : b * self.batch_size + self.sizes[b]]
            yield [(self.epoch, int(i)) for i in batch[self.rank :: self.world_size]]
