# Over 500 lines: exact search (torch and faiss), leave-one-out and the per-domain scorer share one bank format.
"""k-nearest-neighbour memory banks and the per-domain anomaly scorer.

The anomaly score of a test clip is its mean distance to the ``k`` nearest normal training
embeddings of the same (machine, section). Following the DCASE 2022+ domain-generalisation setup,
every (machine, section) has two banks -- the source-domain and the target-domain training clips --
and the score is the minimum over the two banks (the target bank is small, ~10 clips, and would be
swamped if it were pooled with the ~990 source clips)::

    scorer = DomainKNNScorer(KNNConfig(k=1, metric="cosine"))
    scorer.fit(train_emb, keys=[("fan", "00"), ...], domains=["source", ...])
    scores = scorer.score(test_emb, ("fan", "00"))        # (M,) higher = more anomalous

Cosine distance is ``1 - cos(q, x)``, computed as ``1 - q̂ · x̂`` on L2-normalised embeddings with
chunked matrix products. ``index="faiss"`` uses ``faiss.IndexFlatIP`` (exact inner product)
instead; faiss stays optional. ``index="auto"`` (the default) takes the path that is faster on
the machine it runs on: banks under 20,000 rows (and every bank when faiss is not installed) use
the torch path; larger ones time both paths once per process on the bank itself and keep the
decision (:mod:`stetho.scoring.knn_auto`). Which path wins differs between machines, e.g. with
``python benchmarks/ratio_knn.py --quick`` (200 cosine queries, k = 1, D = 768, 1e5 rows): the
torch path took 0.21-0.25x faiss's time on one 2-core AMD EPYC (idle, 786b568), 1.48x on
another (issue 22 item 12); see ``docs/benchmarks.md`` for the figures with their machine and
load.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from stetho.data.names import Key
from stetho.scoring import knn_auto
from stetho.utils.config import ConfigBase
from stetho.utils.errors import InputError

__all__ = ["DomainKNNScorer", "KNNConfig", "MemoryBank", "Neighbour"]

logger = logging.getLogger(__name__)

ArrayLike = np.ndarray | torch.Tensor

#: Domains a bank can hold; clips with an unknown domain (``None``) go to the source bank.
DOMAINS: tuple[str, str] = ("source", "target")

# Elements of the (chunk, N) similarity matrix computed at once (64 MiB of float32).
_CHUNK_ELEMENTS = 1 << 24


@dataclass
class KNNConfig(ConfigBase):
    """Settings of the k-NN back-end.

    Attributes:
        k: Number of neighbours; the score is the mean distance to them (paper: k = 1).
        metric: ``"cosine"`` (``1 - cos``, on L2-normalised embeddings; the default) or
            ``"euclidean"`` (L2 distance on the raw embeddings).
        index: ``"auto"`` (the default: the path measured faster on this machine for banks of
            20,000 rows or more when faiss is installed, else the torch path; see
            :mod:`stetho.scoring.knn_auto`), ``"exact"`` (chunked matrix products in torch) or
            ``"faiss"`` (``IndexFlatIP`` / ``IndexFlatL2``; needs ``pip install faiss-cpu``).
            All three are exact searches and agree to float32 rounding.
        domain_banks: Keep separate source and target banks per (machine, section) and take the
            minimum score over them (DCASE 2022+ practice). ``False`` pools both domains in one bank.
    """

    k: int = 1
    metric: Literal["cosine", "euclidean"] = "cosine"
    index: Literal["auto", "exact", "faiss"] = "auto"
    domain_banks: bool = True

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"KNNConfig.k must be >= 1, got {self.k}")


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x.detach())
    t = t.to(device="cpu", dtype=torch.float32)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t.contiguous()


@functools.cache
def _faiss_available() -> bool:
    """Whether ``import faiss`` works (checked once per process)."""
    try:
        _import_faiss()
    except ImportError:
        return False
    return True


def _import_faiss() -> Any:
    try:
        import faiss  # type: ignore[import-not-found]
    except ImportError as err:
        raise ImportError(
            "KNNConfig.index='faiss' needs the faiss package, which is not installed. Install it "
            "with `pip install faiss-cpu` (or `pip install stetho[faiss]`), or use index='exact'."
        ) from err
    return faiss


@dataclass(frozen=True)
class Neighbour:
    """The nearest bank entry of a query (see :meth:`DomainKNNScorer.nearest`).

    Attributes:
        domain: Bank the entry is in (``"source"`` / ``"target"``).
        index: Row of the entry in that bank.
        distance: Its distance to the query (``1 - cos`` or L2).
        ref: What the entry was fitted from (a detector records the clip's path), or None when
            the bank was built or saved without references.
    """

    domain: str
    index: int
    distance: float
    ref: str | None


class MemoryBank:
    """A set of reference embeddings with exact k-NN search.

    Args:
        cfg: k-NN settings (metric, index, default ``k``).
    """

    def __init__(self, cfg: KNNConfig | None = None) -> None:
        self.cfg = cfg or KNNConfig()
        self._emb: torch.Tensor = torch.zeros(0, 0)  # (N, D) stored (normalised for cosine)
        self._faiss_index: Any = None

    # -- building --------------------------------------------------------------------------
    def fit(self, emb: ArrayLike) -> MemoryBank:
        """Store the embeddings ``emb`` (N, D); cosine banks store them L2-normalised."""
        x = _as_tensor(emb, "emb")
        if self.cfg.metric == "cosine":
            x = torch.nn.functional.normalize(x, p=2.0, dim=1, eps=1e-12)
        self._emb = x
        self._faiss_index = None
        return self

    def load_embeddings(self, stored: torch.Tensor) -> MemoryBank:
        """Restore a bank from :attr:`embeddings` exactly as stored (no re-normalisation)."""
        self._emb = stored.detach().to("cpu", torch.float32).contiguous()
        self._faiss_index = None
        return self

    @property
    def embeddings(self) -> torch.Tensor:
        """The stored embeddings (N, D) (L2-normalised for the cosine metric)."""
        return self._emb

    def __len__(self) -> int:
        return int(self._emb.shape[0])

    @property
    def dim(self) -> int:
        """Embedding size D (0 for an empty bank)."""
        return int(self._emb.shape[1]) if self._emb.ndim == 2 else 0

    # -- search ----------------------------------------------------------------------------
    def search(
        self, query: ArrayLike, k: int | None = None, *, exclude: ArrayLike | None = None
    ) -> torch.Tensor:
        """Distances from each query to its ``k`` nearest bank entries, ascending.

        Args:
            query: Query embeddings (M, D); normalised here for the cosine metric.
            k: Number of neighbours (default ``cfg.k``). When fewer than ``k`` entries are
                available the missing columns are ``inf``.
            exclude: Optional (M,) bank indices, one per query, to leave out (``-1`` = none);
                used for leave-one-out scores of the bank's own members.

        Returns:
            Distances (M, k), float32: ``1 - cos`` (cosine) or L2 distance (euclidean).
        """
        k = self.cfg.k if k is None else int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = _as_tensor(query, "query")
        n, m = len(self), q.shape[0]
        if n and q.shape[1] != self.dim:
            raise ValueError(
                f"query has dimension {q.shape[1]}, the bank holds {self.dim}-d embeddings"
            )
        excl = None
        if exclude is not None:
            excl = torch.as_tensor(np.asarray(exclude), dtype=torch.long).reshape(-1)
            if excl.shape[0] != m:
                raise ValueError(
                    f"exclude must have one index per query ({m}), got {excl.shape[0]}"
                )
        if self.cfg.metric == "cosine":
            q = torch.nn.functional.normalize(q, p=2.0, dim=1, eps=1e-12)
        out = torch.full((m, k), float("inf"), dtype=torch.float32)
        if n == 0 or m == 0:
            return out
        if self._use_faiss(m, k + (1 if excl is not None else 0)):
            return self._search_faiss(q, k, excl, out)
        kk = min(k, n)
        rows = max(1, _CHUNK_ELEMENTS // n)
        euclid = self.cfg.metric == "euclidean"
        bank_sq = (self._emb * self._emb).sum(1) if euclid else None
        for start in range(0, m, rows):
            qc = q[start : start + rows]  # (c, D)
            # Rank by a score that is larger for nearer entries and convert only the k kept
            # columns to distances: one pass over the (c, N) matrix after the product.
            if bank_sq is not None:  # -squared L2 up to the query's constant: 2 q·x - |x|²
                score = torch.addmm(bank_sq[None, :], qc, self._emb.T, beta=-1.0, alpha=2.0)
            else:
                score = qc @ self._emb.T  # (c, N) cosine similarity
            if excl is not None:
                ec = excl[start : start + rows]
                valid = ec >= 0
                score[torch.arange(len(ec))[valid], ec[valid]] = float("-inf")
            if kk == 1:
                top = score.amax(dim=1, keepdim=True)  # (c, 1); faster than topk for k = 1
            else:
                top = torch.topk(score, kk, dim=1, largest=True, sorted=True).values  # (c, kk)
            if bank_sq is not None:  # squared L2 = |q|² - (2 q·x - |x|²)
                dist = ((qc * qc).sum(1, keepdim=True) - top).clamp_min_(0.0).sqrt_()
            else:
                dist = (1.0 - top).clamp_(0.0, 2.0)  # rounding can give -1e-7 for identical rows
            dist[torch.isnan(dist) | torch.isinf(top)] = float("inf")  # excluded entries
            out[start : start + rows, :kk] = dist
        return out

    def _use_faiss(self, queries: int, k: int) -> bool:
        if self.cfg.index != "auto":
            return self.cfg.index == "faiss"
        n, dim = len(self), self.dim
        choice = knn_auto.choose_path(
            n,
            dim,
            queries,
            k,
            self.cfg.metric,
            faiss_available=n >= knn_auto.AUTO_MIN_ROWS and _faiss_available(),
            probe=lambda: self._probe_paths(queries, k),
        )
        return choice == "faiss"

    def _probe_paths(self, queries: int, k: int) -> dict[str, float]:
        """Time the torch and faiss paths on this bank's first rows (``index="auto"``)."""
        rows = self._emb[: knn_auto.PROBE_ROWS]
        nq = queries if queries < knn_auto.FAISS_BLAS_QUERIES else knn_auto.PROBE_QUERIES
        q = rows[torch.linspace(0, rows.shape[0] - 1, nq).long()]
        torch_bank = MemoryBank(dataclasses.replace(self.cfg, index="exact")).load_embeddings(rows)
        faiss_bank = MemoryBank(dataclasses.replace(self.cfg, index="faiss")).load_embeddings(rows)
        return knn_auto.time_paths(
            {"torch": lambda: torch_bank.search(q, k), "faiss": lambda: faiss_bank.search(q, k)}
        )

    def nearest(self, query: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Index and distance of each query's nearest entry (exact search, both (M,)).

        An empty bank gives index -1 and distance ``inf``.
        """
        q = _as_tensor(query, "query")
        m = q.shape[0]
        if len(self) == 0:
            return np.full(m, -1, dtype=np.int64), np.full(m, np.inf)
        if q.shape[1] != self.dim:
            raise ValueError(
                f"query has dimension {q.shape[1]}, the bank holds {self.dim}-d embeddings"
            )
        if self.cfg.metric == "cosine":
            q = torch.nn.functional.normalize(q, p=2.0, dim=1, eps=1e-12)
            dist = (1.0 - q @ self._emb.T).clamp_(0.0, 2.0)  # (M, N)
        else:
            dist = torch.cdist(q, self._emb)  # (M, N)
        val, idx = dist.min(dim=1)
        return idx.numpy().astype(np.int64), val.double().numpy()

    def _search_faiss(
        self, q: torch.Tensor, k: int, excl: torch.Tensor | None, out: torch.Tensor
    ) -> torch.Tensor:
        faiss = _import_faiss()
        if self._faiss_index is None:
            index = (faiss.IndexFlatIP if self.cfg.metric == "cosine" else faiss.IndexFlatL2)(
                self.dim
            )
            index.add(np.ascontiguousarray(self._emb.numpy()))
            self._faiss_index = index
        n = len(self)
        kk = min(k + (1 if excl is not None else 0), n)
        values, indices = self._faiss_index.search(np.ascontiguousarray(q.numpy()), kk)  # (M, kk)
        values = np.asarray(values, dtype=np.float64)
        if self.cfg.metric == "cosine":
            dist = np.clip(1.0 - values, 0.0, 2.0)
        else:  # IndexFlatL2 returns squared distances
            dist = np.sqrt(np.clip(values, 0.0, None))
        indices = np.asarray(indices)
        dist[indices < 0] = np.inf
        if excl is not None:  # leave the query's own entry out (we asked for one extra result)
            ex = excl.numpy()
            dist[(indices == ex[:, None]) & (ex[:, None] >= 0)] = np.inf
        dist = np.sort(dist, axis=1)[:, :k]
        out[:, : dist.shape[1]] = torch.from_numpy(dist.astype(np.float32))
        return out


class DomainKNNScorer:
    """Per-(machine, section) source and target memory banks; score = min over banks.

    ``score`` of a clip = ``min(mean kNN distance to the source bank, ... to the target bank)`` of
    its (machine, section); an empty bank is skipped.

    Args:
        cfg: k-NN settings.
    """

    def __init__(self, cfg: KNNConfig | None = None) -> None:
        self.cfg = cfg or KNNConfig()
        self.banks: dict[Key, dict[str, MemoryBank]] = {}
        # For leave-one-out scores of the fitted data: (key, domain, row in that bank) per sample.
        self._fit_index: list[tuple[Key, str, int]] = []
        # What each bank row was fitted from (e.g. clip paths), per key and domain; optional.
        self.refs: dict[Key, dict[str, list[str]]] = {}

    @property
    def keys(self) -> list[Key]:
        """Fitted (machine, section) keys, sorted."""
        return sorted(self.banks)

    def _domain(self, domain: str | None) -> str:
        if not self.cfg.domain_banks or domain is None:
            return "source"
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {list(DOMAINS)} or None, got {domain!r}")
        return domain

    def fit(
        self,
        emb: ArrayLike,
        keys: Sequence[Key],
        domains: Sequence[str | None],
        *,
        replace: bool = True,
        refs: Sequence[str] | None = None,
    ) -> DomainKNNScorer:
        """Build the banks from training embeddings.

        Args:
            emb: Embeddings (N, D) of normal training clips.
            keys: (machine, section) of each row.
            domains: ``"source"``/``"target"`` (``None`` counts as source) of each row.
            replace: Drop all previously fitted banks (default). ``False`` keeps the banks of
                keys not present in ``keys`` (keys present are rebuilt).
            refs: Optional reference of each row (e.g. the clip's path), kept per bank row so
                that :meth:`nearest` can name the nearest training clip.

        Returns:
            ``self``.
        """
        x = _as_tensor(emb, "emb")
        keys = [(str(m), str(s)) for m, s in keys]
        if not (len(keys) == len(domains) == x.shape[0]):
            raise ValueError(
                f"emb, keys and domains must have the same length, got {x.shape[0]}, {len(keys)}, "
                f"{len(domains)}"
            )
        if x.shape[0] == 0:
            raise ValueError("cannot fit a k-NN scorer on zero embeddings")
        if refs is not None and len(refs) != x.shape[0]:
            raise ValueError(f"got {len(refs)} refs for {x.shape[0]} embeddings")
        if replace:
            self.banks = {}
            self._fit_index = []
            self.refs = {}
        else:
            dims = {b.dim for banks in self.banks.values() for b in banks.values() if len(b)}
            if dims and dims != {x.shape[1]}:
                raise ValueError(f"new embeddings are {x.shape[1]}-d, fitted banks are {dims}-d")
        groups: dict[Key, dict[str, list[int]]] = {}
        fit_index: list[tuple[Key, str, int]] = []
        for i, (key, dom) in enumerate(zip(keys, domains)):
            d = self._domain(dom)
            rows = groups.setdefault(key, {name: [] for name in DOMAINS})[d]
            fit_index.append((key, d, len(rows)))
            rows.append(i)
        for key, by_domain in groups.items():
            self.banks[key] = {
                d: MemoryBank(self.cfg).fit(x[idx] if idx else x[:0])
                for d, idx in by_domain.items()
            }
            if refs is not None:
                self.refs[key] = {d: [str(refs[i]) for i in idx] for d, idx in by_domain.items()}
            else:
                self.refs.pop(key, None)
            n_src, n_tgt = len(by_domain["source"]), len(by_domain["target"])
            if max(n_src, n_tgt) < self.cfg.k:
                logger.warning(
                    "%s/%s: banks hold %d source and %d target embeddings, fewer than k=%d",
                    *key,
                    n_src,
                    n_tgt,
                    self.cfg.k,
                )
        if not replace:  # entries of rebuilt keys point into the old banks: drop them
            fit_index = [e for e in self._fit_index if e[0] not in groups] + fit_index
        self._fit_index = fit_index
        return self

    def require_key(self, key: Key) -> dict[str, MemoryBank]:
        """The banks of ``key``.

        Raises:
            KeyError: the key was not fitted (the message lists the fitted keys).
        """
        key = (str(key[0]), str(key[1]))
        if key not in self.banks:
            fitted = ", ".join(f"{m}/{s}" for m, s in self.keys) or "none"
            raise KeyError(
                f"no memory bank for machine {key[0]!r} section {key[1]!r}; fitted keys: {fitted}"
            )
        return self.banks[key]

    def nearest(self, emb: ArrayLike, key: Key) -> list[Neighbour]:
        """The nearest bank entry (over both domain banks of ``key``) of each row of ``emb``.

        The distance is the one the k = 1 score is made of (the score is the minimum over the
        banks), so for k = 1 it equals :meth:`score`.

        Raises:
            KeyError: ``key`` was not fitted.
        """
        key = (str(key[0]), str(key[1]))
        banks = self.require_key(key)
        x = _as_tensor(emb, "emb")
        best_d = np.full(x.shape[0], np.inf)
        best: list[tuple[str, int]] = [("source", -1)] * x.shape[0]
        for dom, bank in banks.items():
            idx, dist = bank.nearest(x)
            for i in np.flatnonzero(dist < best_d).tolist():
                best_d[i] = dist[i]
                best[i] = (dom, int(idx[i]))
        refs = self.refs.get(key, {})
        out = []
        for (dom, row), d in zip(best, best_d.tolist()):
            names = refs.get(dom)
            ref = names[row] if names is not None and 0 <= row < len(names) else None
            out.append(Neighbour(dom, row, float(d), ref))
        return out

    def load_refs(self, refs: dict[Key, dict[str, list[str]]]) -> None:
        """Attach saved bank references; a key whose lengths do not match its banks is skipped
        with a warning (old or edited folders must stay loadable)."""
        self.refs = {}
        for key, by_domain in refs.items():
            banks = self.banks.get(key)
            if banks is None or any(
                len(by_domain.get(d, [])) != len(banks[d]) for d in DOMAINS if d in banks
            ):
                logger.warning("%s/%s: bank references do not match the banks; ignored", *key)
                continue
            self.refs[key] = {d: list(v) for d, v in by_domain.items()}

    def score(self, emb: ArrayLike, keys: Key | Sequence[Key]) -> np.ndarray:
        """Anomaly scores (M,) of embeddings ``emb`` (M, D), higher = more anomalous.

        Args:
            emb: Query embeddings (M, D).
            keys: One (machine, section) for all rows, or one per row.

        Raises:
            KeyError: for a key that was not fitted (the message lists the fitted keys).
        """
        x = _as_tensor(emb, "emb")
        per_row = self._expand_keys(keys, x.shape[0])
        out = np.empty(x.shape[0], dtype=np.float64)
        for key in dict.fromkeys(per_row):
            rows = [i for i, k in enumerate(per_row) if k == key]
            out[rows] = self._score_key(x[rows], key, None)
        return out

    def _expand_keys(self, keys: Key | Sequence[Key], m: int) -> list[Key]:
        if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(v, str) for v in keys):
            per_row = [(str(keys[0]), str(keys[1]))] * m
        else:
            per_row = [(str(k[0]), str(k[1])) for k in keys]
        if len(per_row) != m:
            raise ValueError(f"got {len(per_row)} keys for {m} embeddings")
        return per_row

    def _score_key(
        self, x: torch.Tensor, key: Key, own: dict[str, np.ndarray] | None
    ) -> np.ndarray:
        banks = self.require_key(key)
        best = np.full(x.shape[0], np.inf)
        for dom, bank in banks.items():
            if len(bank) == 0:
                continue  # e.g. no target clips: skip the empty bank
            exclude = own.get(dom) if own is not None else None
            dist = bank.search(x, exclude=exclude)  # (M, k), inf where fewer neighbours exist
            finite = torch.isfinite(dist)
            count = finite.sum(1)
            mean = torch.where(finite, dist, torch.zeros_like(dist)).sum(1) / count.clamp_min(1)
            mean = torch.where(count > 0, mean, torch.full_like(mean, float("inf")))
            best = np.minimum(best, mean.double().numpy())
        return best

    def score_fitted(self, leave_one_out: bool = True) -> np.ndarray:
        """Scores (N,) of the fitted training embeddings, in fit order.

        With ``leave_one_out`` each embedding is scored with itself removed from its own bank
        (with k = 1 its distance to itself would be 0). A sample whose banks hold nothing else
        gets ``inf``.
        """
        if not self._fit_index:
            raise RuntimeError("the scorer has not been fitted (or was loaded from a state dict)")
        out = np.empty(len(self._fit_index), dtype=np.float64)
        by_key: dict[Key, list[int]] = {}
        for i, (key, _, _) in enumerate(self._fit_index):
            by_key.setdefault(key, []).append(i)
        for key, idx in by_key.items():
            banks = self.require_key(key)
            emb = torch.stack(
                [banks[self._fit_index[i][1]].embeddings[self._fit_index[i][2]] for i in idx]
            )
            own: dict[str, np.ndarray] | None = None
            if leave_one_out:
                own = {
                    d: np.array(
                        [self._fit_index[i][2] if self._fit_index[i][1] == d else -1 for i in idx]
                    )
                    for d in DOMAINS
                }
            out[idx] = self._score_key(emb, key, own)
        return out

    def held_out_scores(self, key: Key) -> np.ndarray:
        """Leave-one-out scores (N,) of every bank row of ``key`` (each row scored with itself
        removed from its own bank; min over the key's banks), rows in domain order.

        Works on loaded banks too (needs no fit index); a row whose banks hold nothing else
        gets ``inf``.
        """
        banks = self.require_key(key)
        rows = [(d, i) for d in DOMAINS if d in banks for i in range(len(banks[d]))]
        if not rows:
            return np.zeros(0)
        emb = torch.stack([banks[d].embeddings[i] for d, i in rows])
        own = {dom: np.array([i if d == dom else -1 for d, i in rows]) for dom in DOMAINS}
        return self._score_key(emb, key, own)

    def fitted_keys(self) -> list[Key]:
        """The (machine, section) of each fitted sample, in fit order."""
        return [key for key, _, _ in self._fit_index]

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors ``bank/<machine>/<section>/<domain>`` → stored embeddings (safetensors-ready)."""
        return {
            f"bank/{m}/{s}/{d}": bank.embeddings.contiguous()
            for (m, s), banks in sorted(self.banks.items())
            for d, bank in banks.items()
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore banks saved by :meth:`state_dict` (exactly, without re-normalising).

        Every bank must be a 2-D floating tensor of finite values, all of one dimension; check
        that dimension against the model with :meth:`check_dim`.

        Raises:
            InputError: a malformed name, a tensor that is not 2-D, a bank with NaN or infinite
                rows (it would score ``inf`` for every clip) or banks of different dimensions;
                the message names the entry (the caller adds the file).
        """
        banks: dict[Key, dict[str, MemoryBank]] = {}
        for name, tensor in state.items():
            parts = name.split("/")
            if len(parts) != 4 or parts[0] != "bank" or parts[3] not in DOMAINS:
                raise InputError(
                    f"unexpected entry {name!r} in a k-NN state dict; expected "
                    "'bank/<machine>/<section>/<source|target>'"
                )
            key = (parts[1], parts[2])
            slot = banks.setdefault(
                key, {d: MemoryBank(self.cfg).fit(torch.zeros(0, 0)) for d in DOMAINS}
            )
            _check_bank_tensor(name, tensor)
            slot[parts[3]] = MemoryBank(self.cfg).load_embeddings(tensor)
        dims = {
            name: int(t.shape[1]) for name, t in state.items() if t.ndim == 2 and t.shape[0] > 0
        }
        if len(set(dims.values())) > 1:
            detail = ", ".join(f"{n}: {d}-d" for n, d in sorted(dims.items()))
            raise InputError(f"the banks have different dimensions ({detail}); refit the banks")
        self.banks = banks
        self._fit_index = []
        self.refs = {}

    @property
    def dim(self) -> int | None:
        """Embedding size of the fitted banks (``None`` when every bank is empty)."""
        dims = {b.dim for banks in self.banks.values() for b in banks.values() if len(b)}
        return dims.pop() if len(dims) == 1 else None

    def check_dim(self, expected: int, what: str = "the model") -> None:
        """Refuse banks whose embeddings are not ``expected``-dimensional.

        Call it after loading, with the embedding size the scorer will be given (e.g. a
        detector's embedding size), so that a wrong bank fails at load instead of per clip.

        Raises:
            InputError: the banks hold another dimension (the message names both).
        """
        dim = self.dim
        if dim is not None and dim != int(expected):
            raise InputError(
                f"the k-NN banks hold {dim}-d embeddings but {what} gives {int(expected)}-d "
                "ones: the banks belong to another model; refit them"
            )


def _check_bank_tensor(name: str, tensor: torch.Tensor) -> None:
    """A stored bank: 2-D, floating, every row finite."""
    if tensor.ndim != 2:
        raise InputError(f"{name}: expected a 2-D tensor, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise InputError(f"{name}: expected floating-point embeddings, got {tensor.dtype}")
    bad = (~torch.isfinite(tensor)).any(dim=1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        raise InputError(
            f"{name}: {len(rows)} of {tensor.shape[0]} bank rows hold NaN or infinite values "
            f"(first: row {rows[0]}); such a bank scores every clip inf. The file is damaged: "
            "fit the banks again"
        )
