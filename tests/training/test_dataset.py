"""Training dataset: per-sample crops, global-batch sharding, waveform cache, labels."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stetho.data import ClipTable, load_audio, scan_dataset
from stetho.data.synth import generate_synthetic_dataset
from stetho.model.labels import build_class_map
from stetho.training.dataset import (
    ClipDataset,
    GlobalBatchSampler,
    WaveformCache,
    collate_batch,
    global_batch_sizes,
    resolve_crop_samples,
)


@pytest.fixture(scope="module")
def train_clips(tmp_path_factory: pytest.TempPathFactory) -> ClipTable:
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic_dataset(
        root,
        machines=("fan", "valve"),
        n_train_source=4,
        n_train_target=2,
        n_test_per_group=1,
        seconds=1.0,
    )
    return scan_dataset(root).filter(split="train")


def test_crops_depend_only_on_seed_epoch_index(train_clips: ClipTable) -> None:
    ds = ClipDataset(train_clips, 16000, crop_samples=4000, seed=7)
    a, b = ds[(0, 3)]["wave"], ds[(0, 3)]["wave"]
    assert a.shape == (4000,) and torch.equal(a, b)
    other_epoch = ds[(1, 3)]["wave"]
    assert not torch.equal(a, other_epoch)
    # the crop is a window of the decoded clip
    full = torch.from_numpy(load_audio(train_clips[3].path, sr=16000)[0])
    starts = [s for s in range(full.shape[0] - 4000 + 1) if torch.equal(full[s : s + 4000], a)]
    assert starts
    # a fresh dataset object (another process/worker) reproduces it
    assert torch.equal(
        ClipDataset(train_clips, 16000, crop_samples=4000, seed=7)[(0, 3)]["wave"], a
    )
    assert not torch.equal(
        ClipDataset(train_clips, 16000, crop_samples=4000, seed=8)[(0, 3)]["wave"], a
    )


def test_short_clips_are_repeat_padded_and_labels_follow_class_map(train_clips: ClipTable) -> None:
    cmap = build_class_map(train_clips)
    ds = ClipDataset(
        train_clips, 8000, cmap, crop_samples=12000, seed=0
    )  # clips are 8000 samples at 8 kHz
    item = ds[0]
    assert item["wave"].shape == (12000,)
    assert item["label"] == cmap.index(train_clips[0])
    assert [ds[i]["label"] for i in range(len(ds))] == [cmap.index(c) for c in train_clips]
    whole = ClipDataset(train_clips, 16000, crop_samples=None)[2]["wave"]
    assert whole.shape == (16000,)


def test_resolve_crop_samples(train_clips: ClipTable) -> None:
    assert resolve_crop_samples(train_clips, 32000, 2.0) == 64000
    assert resolve_crop_samples(train_clips, 32000, None) == 32000  # the shortest clip (1 s)


def test_global_batches_shard_across_processes() -> None:
    assert global_batch_sizes(11, 4, 1) == [4, 4, 3]
    assert global_batch_sizes(9, 4, 2) == [4, 4]  # a last batch of 1 cannot feed 2 processes
    single = list(GlobalBatchSampler(11, 4, seed=3, epoch=2))
    shards = [
        list(GlobalBatchSampler(11, 4, seed=3, epoch=2, rank=r, world_size=2)) for r in (0, 1)
    ]
    assert len(single) == len(shards[0]) == len(shards[1]) == 3
    for b, batch in enumerate(single):
        assert sorted(shards[0][b] + shards[1][b]) == sorted(batch)
        assert all(e == 2 for e, _ in batch)
    assert [len(s) for s in shards[0]] == [2, 2, 2] and [len(s) for s in shards[1]] == [2, 2, 1]
    # every sample once per epoch, a new order every epoch
    assert sorted(i for batch in single for _, i in batch) == list(range(11))
    other = [i for batch in GlobalBatchSampler(11, 4, seed=3, epoch=3) for _, i in batch]
    assert other != [i for batch in single for _, i in batch]
    # resuming mid-epoch skips the batches already done
    assert list(GlobalBatchSampler(11, 4, seed=3, epoch=2, start_step=2)) == single[2:]


def test_workers_give_the_same_batches(train_clips: ClipTable) -> None:
    ds = ClipDataset(train_clips, 16000, crop_samples=3000, seed=1)

    def batches(workers: int) -> list[torch.Tensor]:
        loader = DataLoader(
            ds,
            batch_sampler=GlobalBatchSampler(len(ds), 4, seed=1, epoch=5),
            collate_fn=collate_batch,
            num_workers=workers,
        )
        return [b["wave"] for b in loader]

    for a, b in zip(batches(0), batches(1)):
        assert torch.equal(a, b)


def test_waveform_cache_is_bounded(train_clips: ClipTable) -> None:
    one = 16000 * 4  # bytes of one 1-s float32 clip at 16 kHz
    cache = WaveformCache(max_bytes=2 * one)
    for clip in list(train_clips)[:3]:
        cache.load(clip.path, 16000)
    assert len(cache) == 2 and cache.nbytes == 2 * one
    again = cache.load(train_clips[2].path, 16000)
    np.testing.assert_array_equal(again, load_audio(train_clips[2].path, sr=16000)[0])
    assert cache.load(train_clips[2].path, 8000).shape == (8000,)  # rate is part of the key
    assert len(WaveformCache(0)) == 0


def test_waveform_cache_and_dataset_pickle_for_spawned_workers(train_clips: ClipTable) -> None:
    """spawn/forkserver DataLoader workers pickle the dataset (and its cache with its lock)."""
    cache = WaveformCache(max_bytes=1 << 20)
    cache.load(train_clips[0].path, 16000)
    assert len(cache) == 1
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.max_bytes == cache.max_bytes
    assert len(copy) == 0 and copy.nbytes == 0  # cached waveforms are not shipped
    assert len(cache) == 1  # the original keeps its items
    np.testing.assert_array_equal(
        copy.load(train_clips[1].path, 16000), load_audio(train_clips[1].path, sr=16000)[0]
    )
    assert len(copy) == 1 and copy.nbytes == 16000 * 4  # the recreated lock works
    ds = ClipDataset(train_clips, 16000, crop_samples=3000, seed=1, cache=cache)
    ds2 = pickle.loads(pickle.dumps(ds))
    assert torch.equal(ds2[(2, 3)]["wave"], ds[(2, 3)]["wave"])


def test_collate_rejects_mixed_lengths() -> None:
    items = [
        {"wave": torch.zeros(3), "label": 0, "index": 0},
        {"wave": torch.zeros(4), "label": 0, "index": 1},
    ]
    with pytest.raises(ValueError, match="different lengths"):
        collate_batch(items)
    out = collate_batch(items[:1])
    assert out["wave"].shape == (1, 3) and out["label"].dtype == torch.long
