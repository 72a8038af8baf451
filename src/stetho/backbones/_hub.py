"""The one door to the Hugging Face hub: every hub access of every backbone goes through here.

Each access honours stetho's offline mode (``STETHO_OFFLINE`` / ``HF_HUB_OFFLINE``: cached files
only, no request at all) and its cache folder (``cache_dir() / "hf"``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from stetho.backbones.checkpoint import CheckpointError, cache_dir, resolve_checkpoint
from stetho.utils.download import is_offline

__all__ = [
    "WEIGHT_FILES",
    "checkpoint_files",
    "hf_cache",
    "hub_file",
    "hub_offline_mode",
    "looks_like_hub_id",
    "offline_hint",
    "weight_files",
]

logger = logging.getLogger(__name__)

#: Weight files looked for in a hub repository or local directory, in this order.
WEIGHT_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)


def hf_cache() -> Path:
    """Cache folder for hub downloads: ``cache_dir() / "hf"``."""
    return cache_dir() / "hf"


def looks_like_hub_id(spec: str) -> bool:
    """Whether ``spec`` has the form ``owner/name``."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", spec) is not None


def offline_hint() -> str:
    """What to do when hub files are neither cached nor reachable."""
    if is_offline():
        return (
            "offline mode is on (HF_HUB_OFFLINE / STETHO_OFFLINE) and the files are not in the "
            f"cache {hf_cache()}: run once with network access to cache them, or download the "
            "repository and pass its local directory as the checkpoint"
        )
    return (
        f"the files are not in the cache {hf_cache()} and could not be fetched: check the hub id "
        "and the network, or download the repository and pass its local directory"
    )


@contextlib.contextmanager
def hub_offline_mode() -> Iterator[None]:
    """Mirror stetho's offline flag into ``huggingface_hub`` for the duration of a hub call.

    ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once, at import. If offline mode is switched on
    later (or through ``STETHO_OFFLINE``), even ``local_files_only`` look-ups still make a request
    (its agent-detection registry fetch while building headers). Setting its flag prevents that.
    """
    if not is_offline():
        yield
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def hub_file(repo_id: str, filename: str) -> Path | None:
    """Download (or find in the cache) one file of a hub repository; ``None`` if unavailable."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError

    try:
        with hub_offline_mode():
            path = hf_hub_download(
                repo_id, filename, cache_dir=str(hf_cache()), local_files_only=is_offline()
            )
    except EntryNotFoundError:  # not in the repo, or (offline / unreachable) not in the cache
        return None
    except HFValidationError as err:
        raise CheckpointError(f"{repo_id!r} is not a valid hub id or local path: {err}") from err
    except OSError as err:  # RepositoryNotFoundError, GatedRepoError, HTTP and network errors
        raise CheckpointError(f"cannot fetch {filename} from hub repo {repo_id!r}: {err}") from err
    return Path(path)


def weight_files(spec: str, prefix: str | None) -> list[Path]:
    """Weight files of a local directory or hub repo (only shards holding ``prefix`` keys).

    Raises:
        CheckpointError: no weight file found; the message names the id/directory and the remedy.
    """
    local = Path(spec).expanduser()
    is_dir = local.is_dir()
    if not is_dir and not looks_like_hub_id(spec):
        raise CheckpointError(
            f"checkpoint {spec!r} is neither an existing file or directory, a URL, a file in the "
            f"cache {cache_dir()}, nor a hub id of the form 'owner/name'"
        )

    def fetch(name: str) -> Path | None:
        if is_dir:
            return local / name if (local / name).is_file() else None
        return hub_file(spec, name)

    for name in WEIGHT_FILES:
        found = fetch(name)
        if found is None:
            continue
        if not name.endswith(".index.json"):
            return [found]
        weight_map: dict[str, str] = json.loads(found.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(
            {f for k, f in weight_map.items() if prefix is None or k.startswith(prefix)}
        )
        if not shards:
            raise CheckpointError(f"{found}: no tensor names start with {prefix!r}")
        files = []
        for shard in shards:
            got = fetch(shard)
            if got is None:
                raise CheckpointError(
                    f"shard {shard} listed in {found} is missing for {spec!r}; "
                    + ("it is not in the directory" if is_dir else offline_hint())
                )
            files.append(got)
        logger.info("using %d of %d shards of %s", len(files), len(set(weight_map.values())), spec)
        return files
    where = f"directory {local}" if is_dir else f"hub id {spec!r}"
    raise CheckpointError(
        f"no weights found for {where}: expected one of {list(WEIGHT_FILES)}"
        + ("" if is_dir else f"; {offline_hint()}")
    )


def checkpoint_files(spec: str, prefix: str | None) -> list[Path]:
    """Resolve a checkpoint spec: local file/dir, URL, cached file name, or hub id."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return weight_files(spec, prefix)
    if path.is_file() or spec.startswith(("http://", "https://", "file://")):
        return [resolve_checkpoint(spec)]
    if (cache_dir() / path.name).is_file():
        return [resolve_checkpoint(spec)]
    return weight_files(spec, prefix)
