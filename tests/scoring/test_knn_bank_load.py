"""Damaged banks are refused at load, not scored as ``inf`` for every clip (#22 item 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stetho.scoring.bank import BackendConfig, BankBackend
from stetho.scoring.knn import DomainKNNScorer, KNNConfig
from stetho.utils.errors import InputError

KEYS = [("fan", "00")] * 6 + [("pump", "01")] * 6
DOMAINS = ["source"] * 4 + ["target"] * 2 + ["source"] * 6


def _scorer(dim: int = 8) -> DomainKNNScorer:
    rng = np.random.default_rng(0)
    return DomainKNNScorer(KNNConfig()).fit(rng.standard_normal((12, dim)), KEYS, DOMAINS)


def test_nan_row_in_a_knn_bank_is_refused_naming_the_bank() -> None:
    state = _scorer().state_dict()
    state["bank/fan/00/source"] = state["bank/fan/00/source"].clone()
    state["bank/fan/00/source"][2, 5] = float("nan")
    with pytest.raises(InputError, match=r"bank/fan/00/source: 1 of 4 bank rows .*row 2"):
        DomainKNNScorer(KNNConfig()).load_state_dict(state)


def test_inf_row_is_refused_too() -> None:
    state = _scorer().state_dict()
    state["bank/pump/01/source"] = state["bank/pump/01/source"].clone()
    state["bank/pump/01/source"][0, 0] = float("inf")
    with pytest.raises(InputError, match="NaN or infinite"):
        DomainKNNScorer(KNNConfig()).load_state_dict(state)


def test_intact_banks_load_and_score_as_saved() -> None:
    src = _scorer()
    loaded = DomainKNNScorer(KNNConfig())
    loaded.load_state_dict(src.state_dict())
    q = np.random.default_rng(1).standard_normal((3, 8))
    np.testing.assert_array_equal(loaded.score(q, ("fan", "00")), src.score(q, ("fan", "00")))
    assert loaded.dim == 8
    loaded.check_dim(8)


def test_wrong_dimension_is_detectable_at_load() -> None:
    loaded = DomainKNNScorer(KNNConfig())
    loaded.load_state_dict(_scorer(dim=8).state_dict())
    with pytest.raises(InputError, match=r"8-d embeddings but the model gives 16-d"):
        loaded.check_dim(16, "the model")


def test_banks_of_mixed_dimensions_are_refused() -> None:
    state = _scorer(dim=8).state_dict()
    state["bank/pump/01/source"] = torch.zeros(3, 5)
    with pytest.raises(InputError, match="different dimensions"):
        DomainKNNScorer(KNNConfig()).load_state_dict(state)


def test_integer_bank_is_refused() -> None:
    state = _scorer().state_dict()
    state["bank/fan/00/source"] = torch.zeros(2, 8, dtype=torch.int64)
    with pytest.raises(InputError, match="floating"):
        DomainKNNScorer(KNNConfig()).load_state_dict(state)


# -- few-shot back-ends ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["knn", "mahalanobis", "gmm"])
def test_fewshot_backend_with_a_nan_row_is_refused(kind: str) -> None:
    cfg = BackendConfig(kind=kind)  # type: ignore[arg-type]
    x = np.random.default_rng(2).standard_normal((10, 4))
    state = BankBackend(cfg).fit(x).state()
    ok = BankBackend.from_state(cfg, state)
    np.testing.assert_array_equal(ok.score(x[:3]), BankBackend(cfg).fit(x).score(x[:3]))
    bank = state["bank"].copy()
    bank[7, 1] = np.nan
    with pytest.raises(InputError, match=r"'bank' holds NaN.*first: row 7"):
        BankBackend.from_state(cfg, {**state, "bank": bank})


def test_fewshot_backend_nan_statistics_and_missing_arrays_are_refused() -> None:
    cfg = BackendConfig()
    state = BankBackend(cfg).fit(np.random.default_rng(3).standard_normal((6, 4))).state()
    with pytest.raises(InputError, match="'std_mean' holds NaN"):
        BankBackend.from_state(cfg, {**state, "std_mean": np.full(4, np.nan)})
    with pytest.raises(InputError, match="'norm' holds NaN"):
        BankBackend.from_state(cfg, {**state, "norm": np.array([np.nan, 1.0])})
    with pytest.raises(InputError, match=r"lacks \['bank'\]"):
        BankBackend.from_state(cfg, {k: v for k, v in state.items() if k != "bank"})


def test_fewshot_backend_dimension_is_checkable() -> None:
    cfg = BackendConfig()
    be = BankBackend.from_state(
        cfg, BankBackend(cfg).fit(np.ones((5, 4)) * np.arange(5)[:, None]).state()
    )
    assert be.dim == 4
    be.check_dim(4)
    with pytest.raises(InputError, match="4-d features but the extractor gives 6-d"):
        be.check_dim(6, "the extractor")
    state = be.state()
    with pytest.raises(InputError, match="do not match"):
        BankBackend.from_state(cfg, {**state, "std_mean": np.zeros(6)})


def test_one_row_bank_with_inf_leave_one_out_still_loads() -> None:
    cfg = BackendConfig()
    state = BankBackend(cfg).fit(np.ones((1, 4))).state()
    assert np.isinf(state["loo_raw"]).all()
    assert BankBackend.from_state(cfg, state).dim == 4
