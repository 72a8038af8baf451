# Over 500 lines: the three fine-tuning strategies and LoRA (targets, presets, merge) share their checks.
"""Which backbone weights train: full fine-tuning, a frozen backbone, or LoRA (peft).

::

    cfg = FinetuneConfig(strategy="lora", lora=LoRAConfig(r=64, alpha=64, targets=("q", "v")))
    apply_finetuning(backbone, cfg)          # in place; only LoRA weights require grad
    sd = lora_state_dict(backbone)           # flat {name: tensor}, safetensors-compatible
    merge_lora(backbone)                     # fold LoRA into the weights, original module names

Parameters a backbone freezes by design (``requires_grad=False`` when it is built, e.g. the
sinusoidal ``embed_positions`` table of the Whisper / Qwen-Audio encoders) stay frozen under every
strategy, ``full`` included: :func:`apply_finetuning` records them the first time it sees a
backbone (:func:`frozen_parameter_names`). BatchNorm running statistics are a separate matter:
:func:`freeze_norm_statistics` keeps them fixed during training (``FinetuneConfig.freeze_norm_stats``).

LoRA targets are never guessed from module names: each backbone declares
``lora_target_templates`` (matrix key → module-name template with ``{i}``), ``num_layers`` and
``layers_pattern``; they are turned into a peft :class:`~peft.LoraConfig` whose ``target_modules``
are the template tails (e.g. ``self_attn.q_proj``) restricted with ``layers_to_transform`` and an
explicit ``layers_pattern``. After injection the adapted modules are checked against the
declared names and ranks. **Load the official checkpoint before calling** :func:`apply_finetuning`:
injection renames ``….q_proj.weight`` to ``….q_proj.base_layer.weight``.

Per-layer / per-matrix ranks use a friendly key syntax in ``rank_pattern`` / ``alpha_pattern``::

    KEY      := MATRICES [ "@" LAYERS ]
    MATRICES := MATRIX ("," MATRIX)*          MATRIX ∈ q, k, v, out, fc1, fc2, fc (fc = fc1 + fc2)
    LAYERS   := "all" | "first-half" | "latter-half" | ITEM ("," ITEM)*
    ITEM     := N | N-M                        0-based layer indices, ranges inclusive

Examples: ``{"v@6-11": 96}``, ``{"q,v@latter-half": 96}``, ``{"fc@0,2,4": 8}``. For ``n`` layers the
latter half is layers ``n//2 … n-1`` (6–11 of 12). Entries apply in order, each overriding the
previous ones for the modules it covers; a ``preset`` applies before ``rank_pattern``. The keys are
translated into escaped, end-anchored peft regexes built from the backbone's real module names,
one per (matrix, value) group so they never overlap (peft takes the *first* matching key).

With ``scale_alpha_with_rank`` (default) a module whose rank differs from ``r`` gets
``alpha · r_module / r``, so its scaling stays ``alpha / r``; an explicit ``alpha_pattern`` entry
wins. ``alpha`` is always passed to peft explicitly (peft's own default, 8, would give scaling
8/64 = 0.125).

Presets (the paper's Table 6, 1.5 × ``r`` rounded half up):

* ``table6-1``: v in all layers;
* ``table6-2``: q and v in the latter half of the layers;
* ``table6-3``: v in the latter half only (r=64 → v r=96 in layers 6–11 of 12).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import nn

from stetho.backbones.base import MATRIX_KEYS, Backbone
from stetho.utils.config import ConfigBase

__all__ = [
    "LORA_PRESETS",
    "STRATEGIES",
    "FinetuneConfig",
    "LoRAConfig",
    "adapted_modules",
    "apply_finetuning",
    "build_lora_config",
    "freeze_norm_statistics",
    "frozen_parameter_names",
    "load_lora_state_dict",
    "lora_state_dict",
    "merge_lora",
    "norm_stats_frozen",
    "parse_pattern_key",
    "plan_lora",
    "trainable_parameter_count",
    "valid_strategies",
]

logger = logging.getLogger(__name__)

#: Fine-tuning strategies.
STRATEGIES: tuple[str, ...] = ("full", "frozen", "lora")

#: Rank presets: name → (friendly keys whose rank becomes ``factor · r``, factor).
LORA_PRESETS: dict[str, tuple[tuple[str, ...], float]] = {
    "table6-1": (("v@all",), 1.5),
    "table6-2": (("q,v@latter-half",), 1.5),
    "table6-3": (("v@latter-half",), 1.5),
}

_ADAPTER = "default"
# Attribute holding the names of the parameters a backbone froze by design (see frozen_parameter_names).
_FROZEN_ATTR = "_stetho_frozen_by_design"
_MATRIX_ALIASES: dict[str, tuple[str, ...]] = {
    **{m: (m,) for m in MATRIX_KEYS},
    "fc": ("fc1", "fc2"),
}
_LAYER_WORDS = ("all", "first-half", "latter-half")
_ITEM_RE = re.compile(r"^(\d+)(?:-(\d+))?$")

KEY_SYNTAX = (
    "MATRICES[@LAYERS] with MATRICES a comma list of q,k,v,out,fc1,fc2,fc and LAYERS 'all', "
    "'first-half', 'latter-half' or a comma list of 0-based N or N-M, e.g. 'v@6-11' or 'q,v@latter-half'"
)


# -- configs --------------------------------------------------------------------------------------
@dataclass
class LoRAConfig(ConfigBase):
    """LoRA settings (see the module docstring for the key syntax and presets).

    Attributes:
        r: Default rank.
        alpha: LoRA alpha (scaling = alpha / r); always passed to peft explicitly.
        dropout: Dropout on the LoRA branch input.
        targets: Matrix keys to adapt: q, k, v, out, fc1, fc2, or fc (= fc1 + fc2).
        layers: 0-based layer indices to adapt (all layers when ``None``).
        rank_pattern: Per-matrix/per-layer ranks, e.g. ``{"v@6-11": 96}``.
        alpha_pattern: Per-matrix/per-layer alphas, same keys.
        scale_alpha_with_rank: Give modules with a non-default rank ``alpha · r_module / r`` so
            their scaling stays ``alpha / r`` (explicit ``alpha_pattern`` entries win).
        preset: ``None`` or one of :data:`LORA_PRESETS` (``table6-1``, ``table6-2``, ``table6-3``).
    """

    r: int = 64
    alpha: float = 64.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q", "v")
    layers: list[int] | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    scale_alpha_with_rank: bool = True
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError(f"lora.r must be a positive integer, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"lora.alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        self.targets = tuple(self.targets)
        if not self.targets:
            raise ValueError(f"lora.targets is empty; choose from {sorted(_MATRIX_ALIASES)}")
        _expand_matrices(self.targets, "lora.targets")
        if self.layers is not None:
            if not self.layers:
                raise ValueError("lora.layers is an empty list; use null for all layers")
            if any(i < 0 for i in self.layers):
                raise ValueError(
                    f"lora.layers must be 0-based non-negative indices, got {self.layers}"
                )
        if self.preset is not None and self.preset not in LORA_PRESETS:
            raise ValueError(
                f"unknown lora.preset {self.preset!r}; valid choices: {sorted(LORA_PRESETS)}"
            )
        for key, rank in self.rank_pattern.items():
            parse_pattern_key(key)
            if int(rank) != rank or rank <= 0:
                raise ValueError(
                    f"lora.rank_pattern[{key!r}] must be a positive integer, got {rank}"
                )
        for key, alpha in self.alpha_pattern.items():
            parse_pattern_key(key)
            if alpha <= 0:
                raise ValueError(f"lora.alpha_pattern[{key!r}] must be positive, got {alpha}")


@dataclass
class FinetuneConfig(ConfigBase):
    """Fine-tuning strategy.

    Attributes:
        strategy: ``"full"`` (every backbone weight trains, except parameters the backbone
            freezes by design such as Whisper's sinusoidal position table), ``"frozen"`` (backbone
            frozen, only the head trains) or ``"lora"`` (only the LoRA matrices train).
        lora: LoRA settings, used when ``strategy == "lora"``.
        freeze_norm_stats: Keep the BatchNorm running statistics of the backbone fixed during
            training (its BatchNorm layers stay in eval mode, normalising with the pre-trained
            statistics; their affine weights still train under ``full``). Default ``False``:
            measured with full fine-tuning of the AudioSet EfficientAT mn04, letting the
            statistics adapt to machine sounds scored better both on the real DCASE 2023 clips
            (pooled AUC 0.674 vs 0.570, mean of 3 seeds) and on the synthetic demo (Ω 0.864 vs
            0.824); see ``docs/benchmarks.md``. Set it for very small or very noisy batches.
            Only matters for ``full``: ``frozen`` and ``lora`` always keep the statistics (the
            base model stays fixed), and transformer backbones have no BatchNorm (CED's input
            BatchNorm is always frozen by the backbone itself).
    """

    strategy: Literal["full", "frozen", "lora"] = "lora"
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    freeze_norm_stats: bool = False


# -- friendly pattern keys ------------------------------------------------------------------------
def _expand_matrices(names: tuple[str, ...] | list[str], where: str) -> tuple[str, ...]:
    out: list[str] = []
    for name in names:
        key = name.strip()
        if key not in _MATRIX_ALIASES:
            raise ValueError(f"{where}: unknown matrix {name!r}; valid: {sorted(_MATRIX_ALIASES)}")
        out.extend(m for m in _MATRIX_ALIASES[key] if m not in out)
    return tuple(out)


def parse_pattern_key(key: str) -> tuple[tuple[str, ...], str | tuple[int, ...]]:
    """Parse a friendly ``rank_pattern`` / ``alpha_pattern`` key.

    Args:
        key: e.g. ``"v@6-11"``, ``"q,v@latter-half"``, ``"fc"``.

    Returns:
        ``(matrices, layers)`` where ``matrices`` are expanded matrix keys and ``layers`` is one of
        ``"all"``, ``"first-half"``, ``"latter-half"`` or a tuple of 0-based indices.

    Raises:
        ValueError: the key does not follow the syntax (the message shows it).
    """
    text = str(key).strip()
    mats, sep, lay = text.partition("@")
    if not mats.strip() or (sep and not lay.strip()):
        raise ValueError(f"bad LoRA pattern key {key!r}; expected {KEY_SYNTAX}")
    try:
        matrices = _expand_matrices(mats.split(","), f"LoRA pattern key {key!r}")
    except ValueError as err:
        raise ValueError(f"{err}; expected {KEY_SYNTAX}") from None
    lay = lay.strip()
    if not sep or lay == "all":
        return matrices, "all"
    if lay in _LAYER_WORDS:
        return matrices, lay
    layers: list[int] = []
    for item in lay.split(","):
        m = _ITEM_RE.match(item.strip())
        if m is None:
            raise ValueError(
                f"bad layer item {item!r} in LoRA pattern key {key!r}; expected {KEY_SYNTAX}"
            )
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(
                f"empty layer range {item!r} in LoRA pattern key {key!r} (N-M needs N <= M); "
                f"expected {KEY_SYNTAX}"
            )
        layers.extend(i for i in range(lo, hi + 1) if i not in layers)
    return matrices, tuple(layers)


def _resolve_layers(spec: str | tuple[int, ...], n: int, key: str) -> set[int]:
    if isinstance(spec, tuple):
        bad = [i for i in spec if not 0 <= i < n]
        if bad:
            raise ValueError(f"LoRA pattern key {key!r}: layer(s) {bad} out of range 0..{n - 1}")
        return set(spec)
    if spec == "all":
        return set(range(n))
    if spec == "first-half":
        return set(range(n // 2))
    if spec == "latter-half":
        return set(range(n // 2, n))
    raise ValueError(
        f"LoRA pattern key {key!r}: unknown layer spec {spec!r}; expected {KEY_SYNTAX}"
    )


# -- planning -------------------------------------------------------------------------------------
def valid_strategies(backbone: Backbone) -> list[str]:
    """Strategies that make sense for ``backbone`` (``lora`` needs declared LoRA targets)."""
    if not any(True for _ in backbone.parameters()):
        return ["frozen"]
    if backbone.lora_target_templates and backbone.num_layers > 0:
        return list(STRATEGIES)
    return ["full", "frozen"]


def _backbone_name(backbone: Backbone) -> str:
    return backbone.pretrained_cfg.name or type(backbone).__name__


def _check_lora_capable(backbone: Backbone) -> None:
    if not backbone.lora_target_templates or backbone.num_layers <= 0:
        raise ValueError(
            f"backbone {_backbone_name(backbone)!r} has no LoRA target modules (it is not a "
            f"transformer); valid strategies for it: {valid_strategies(backbone)}"
        )


@dataclass(frozen=True)
class _Target:
    matrix: str
    layer: int
    name: str


def _lora_targets(backbone: Backbone, cfg: LoRAConfig) -> list[_Target]:
    _check_lora_capable(backbone)
    n = backbone.num_layers
    available = sorted(backbone.lora_target_templates)
    matrices = _expand_matrices(cfg.targets, "lora.targets")
    missing = [m for m in matrices if m not in backbone.lora_target_templates]
    if missing:
        raise ValueError(
            f"backbone {_backbone_name(backbone)!r} has no LoRA target(s) {missing}; valid: {available}"
        )
    if cfg.layers is None:
        layers = list(range(n))
    else:
        bad = [i for i in cfg.layers if not 0 <= i < n]
        if bad:
            raise ValueError(f"lora.layers {bad} out of range 0..{n - 1} (0-based, {n} layers)")
        layers = sorted(set(cfg.layers))
    return [
        _Target(m, i, name)
        for m in matrices
        for i, name in zip(layers, backbone.lora_module_names(m, layers))
    ]


def _apply_entries(
    targets: list[_Target],
    values: dict[str, float],
    entries: list[tuple[str, float]],
    n_layers: int,
    what: str,
) -> None:
    """Set ``values[name]`` for the targets covered by each (key, value) entry, in order."""
    adapted = sorted({t.matrix for t in targets})
    for key, value in entries:
        matrices, spec = parse_pattern_key(key)
        extra = [m for m in matrices if m not in adapted]
        if extra:
            raise ValueError(
                f"lora.{what} key {key!r} names matrix(es) {extra} that are not adapted; "
                f"lora.targets gives {adapted}"
            )
        layers = _resolve_layers(spec, n_layers, key)
        covered = [t for t in targets if t.matrix in matrices and t.layer in layers]
        if not covered:
            raise ValueError(
                f"lora.{what} key {key!r} covers no adapted module (adapted layers: "
                f"{sorted({t.layer for t in targets})})"
            )
        for t in covered:
            values[t.name] = value


def plan_lora(backbone: Backbone, cfg: LoRAConfig) -> dict[str, tuple[int, float]]:
    """Resolve a :class:`LoRAConfig` against a backbone.

    Returns:
        ``{module name: (rank, alpha)}`` for every module that will get LoRA, in target order.

    Raises:
        ValueError: the backbone has no LoRA targets, a target/layer is invalid, or a pattern key
            is malformed or covers no adapted module.
    """
    targets = _lora_targets(backbone, cfg)
    n = backbone.num_layers
    ranks: dict[str, float] = {t.name: cfg.r for t in targets}
    entries: list[tuple[str, float]] = []
    if cfg.preset is not None:
        keys, factor = LORA_PRESETS[cfg.preset]
        entries += [(k, float(math.floor(factor * cfg.r + 0.5))) for k in keys]
    entries += [(k, float(v)) for k, v in cfg.rank_pattern.items()]
    _apply_entries(
        targets, ranks, entries, n, "rank_pattern" if not cfg.preset else "preset/rank_pattern"
    )
    alphas: dict[str, float] = {
        name: (cfg.alpha * r / cfg.r if cfg.scale_alpha_with_rank else cfg.alpha)
        for name, r in ranks.items()
    }
    _apply_entries(targets, alphas, list(cfg.alpha_pattern.items()), n, "alpha_pattern")
    return {t.name: (int(ranks[t.name]), float(alphas[t.name])) for t in targets}


def _group_regex(template: str, layers: list[int]) -> str:
    """Escaped regex matching ``template`` for the given layers, e.g. ``encoder\\.layers\\.(?:6|7)\\.…``."""
    head, _, tail = template.partition("{i}")
    alt = "|".join(str(i) for i in sorted(layers))
    return f"{re.escape(head)}(?:{alt}){re.escape(tail)}"


def _pattern_dict(
    backbone: Backbone, targets: list[_Target], values: dict[str, float], default: float
) -> dict[str, float]:
    groups: dict[tuple[str, float], list[int]] = {}
    for t in targets:
        v = values[t.name]
        if v != default:
            groups.setdefault((t.matrix, v), []).append(t.layer)
    return {
        _group_regex(backbone.lora_target_templates[m], layers): v
        for (m, v), layers in groups.items()
    }


def _layers_pattern(backbone: Backbone) -> str:
    if backbone.layers_pattern:
        return backbone.layers_pattern
    # Derive it from a template: the name component right before "{i}".
    template = next(iter(backbone.lora_target_templates.values()))
    head = template.partition(".{i}")[0]
    return head.rsplit(".", 1)[-1]


def build_lora_config(backbone: Backbone, cfg: LoRAConfig) -> Any:
    """Translate a :class:`LoRAConfig` into a peft ``LoraConfig`` for ``backbone``.

    ``target_modules`` are the template tails after ``{i}.`` (e.g. ``self_attn.q_proj``),
    ``layers_to_transform`` the adapted layers with an explicit ``layers_pattern``, and
    ``rank_pattern`` / ``alpha_pattern`` non-overlapping escaped regexes of full module names.
    """
    from peft import LoraConfig

    plan = plan_lora(backbone, cfg)
    targets = _lora_targets(backbone, cfg)
    tails: list[str] = []
    for m in sorted({t.matrix for t in targets}):
        template = backbone.lora_target_templates[m]
        if "{i}." not in template:
            raise ValueError(
                f"LoRA template {template!r} of backbone {_backbone_name(backbone)!r} must look like "
                "'<container>.{i}.<module path>'"
            )
        tail = template.partition("{i}.")[2]
        if tail not in tails:
            tails.append(tail)
    ranks = {name: float(r) for name, (r, _) in plan.items()}
    alphas = {name: a for name, (_, a) in plan.items()}
    rank_pattern = {k: int(v) for k, v in _pattern_dict(backbone, targets, ranks, cfg.r).items()}
    alpha_pattern = _pattern_dict(backbone, targets, alphas, float(cfg.alpha))
    return LoraConfig(
        r=cfg.r,
        lora_alpha=cast(Any, cfg.alpha),  # peft annotates int; a float alpha works the same
        lora_dropout=cfg.dropout,
        bias="none",
        target_modules=tails,
        layers_to_transform=sorted({t.layer for t in targets}),
        layers_pattern=_layers_pattern(backbone),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        init_lora_weights=True,
    )


# -- applying -------------------------------------------------------------------------------------
def _lora_layers(module: nn.Module) -> dict[str, Any]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in module.named_modules() if isinstance(m, LoraLayer)}


def adapted_modules(backbone: nn.Module) -> dict[str, tuple[int, float]]:
    """``{module name: (rank, alpha)}`` of the LoRA layers currently in ``backbone``."""
    out: dict[str, tuple[int, float]] = {}
    for name, layer in _lora_layers(backbone).items():
        out[name] = (int(layer.r[_ADAPTER]), float(layer.lora_alpha[_ADAPTER]))
    return out


def trainable_parameter_count(module: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (shared parameters counted once)."""
    unique = {id(p): p for p in module.parameters() if p.requires_grad}
    return sum(p.numel() for p in unique.values())


def frozen_parameter_names(backbone: nn.Module) -> frozenset[str]:
    """Names of the parameters ``backbone`` keeps frozen by design (never trained by any strategy).

    These are the parameters with ``requires_grad=False`` the first time this function (or
    :func:`apply_finetuning`) sees the backbone, i.e. as built by ``create_backbone``: for example
    the sinusoidal ``encoder.embed_positions.weight`` of the Whisper / Qwen-Audio encoders. The set
    is recorded on the module, so later ``requires_grad`` changes (a ``frozen`` strategy, say) do
    not alter it.
    """
    recorded = getattr(backbone, _FROZEN_ATTR, None)
    if recorded is None:
        recorded = frozenset(n for n, p in backbone.named_parameters() if not p.requires_grad)
        setattr(backbone, _FROZEN_ATTR, recorded)
    return cast(frozenset[str], recorded)


def norm_stats_frozen(cfg: FinetuneConfig) -> bool:
    """Whether training keeps the backbone's BatchNorm statistics fixed under ``cfg``.

    Always for ``frozen`` and ``lora`` (the base model does not change), else
    ``cfg.freeze_norm_stats``.
    """
    return cfg.strategy != "full" or cfg.freeze_norm_stats


def freeze_norm_statistics(module: nn.Module) -> int:
    """Put every BatchNorm layer of ``module`` in eval mode (running statistics fixed, used).

    ``module.train()`` undoes this, so call it again after every ``train()`` (the training loop
    does). Affine BatchNorm weights keep their ``requires_grad``.

    Returns:
        The number of BatchNorm layers set to eval mode.
    """
    n = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            n += 1
    return n


def apply_finetuning(backbone: Backbone, cfg: FinetuneConfig) -> Backbone:
    """Set which backbone weights train, in place.

    * ``full``: every parameter requires grad, except those the backbone freezes by design
      (:func:`frozen_parameter_names`, e.g. Whisper's sinusoidal position table).
    * ``frozen``: no backbone parameter requires grad (only the head trains).
    * ``lora``: LoRA layers are injected with peft ``inject_adapter_in_model`` (B = 0, so the
      outputs are unchanged) and only their A/B matrices require grad.

    Call it on a freshly built backbone (``create_backbone``; loading weights does not matter):
    its ``requires_grad`` flags at the first call define the parameters frozen by design. Load the
    official checkpoint first: injection renames the adapted weights to ``….base_layer.weight``.

    Raises:
        ValueError: an unknown strategy, LoRA on a backbone without LoRA targets (the message
            lists the strategies valid for it), ``full`` on a parameter-free backbone or on one
            whose parameters were all frozen before the first call, LoRA applied twice, or an
            invalid LoRA config.
    """
    strategy = cfg.strategy
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown fine-tuning strategy {strategy!r}; valid: {list(STRATEGIES)}")
    if _lora_layers(backbone):
        raise ValueError(
            "backbone already has LoRA layers; build a fresh backbone (or merge_lora) before "
            "applying a fine-tuning strategy again"
        )
    if strategy not in valid_strategies(backbone):
        if strategy == "lora":
            _check_lora_capable(backbone)
        raise ValueError(
            f"strategy {strategy!r} is not valid for backbone {_backbone_name(backbone)!r} (it has "
            f"no parameters); valid strategies for it: {valid_strategies(backbone)}"
        )
    keep_frozen = frozen_parameter_names(backbone)
    if strategy == "full":
        names = [n for n, _ in backbone.named_parameters()]
        if all(n in keep_frozen for n in names):
            raise ValueError(
                f"every parameter of backbone {_backbone_name(backbone)!r} had requires_grad=False "
                "when apply_finetuning first saw it, so 'full' would train nothing; build a fresh "
                "backbone (create_backbone) or use strategy 'frozen'"
            )
        for name, p in backbone.named_parameters():
            p.requires_grad_(name not in keep_frozen)
        if keep_frozen:
            logger.info(
                "full fine-tuning keeps %d parameter(s) frozen by design: %s",
                len(keep_frozen),
                sorted(keep_frozen)[:4],
            )
    elif strategy == "frozen":
        for p in backbone.parameters():
            p.requires_grad_(False)
    else:
        from peft import inject_adapter_in_model

        plan = plan_lora(backbone, cfg.lora)
        peft_cfg = build_lora_config(backbone, cfg.lora)
        for p in backbone.parameters():
            p.requires_grad_(False)
        inject_adapter_in_model(peft_cfg, backbone, adapter_name=_ADAPTER)
        got = adapted_modules(backbone)
        if got != plan:
            wrong = sorted(set(got) ^ set(plan)) or sorted(k for k in plan if got.get(k) != plan[k])
            raise RuntimeError(
                f"peft adapted modules differ from the declared LoRA targets of "
                f"{_backbone_name(backbone)!r} (first differences: {wrong[:6]}); check the "
                "backbone's lora_target_templates / layers_pattern"
            )
        for name, p in backbone.named_parameters():
            p.requires_grad_(".lora_A." in name or ".lora_B." in name)
    n_train = trainable_parameter_count(backbone)
    n_all = sum(p.numel() for p in {id(p): p for p in backbone.parameters()}.values())
    logger.info(
        "fine-tuning %s: strategy=%s, %d of %d backbone parameters trainable",
        _backbone_name(backbone),
        strategy,
        n_train,
        n_all,
    )
    return backbone


def _require_lora(backbone: nn.Module) -> None:
    if not _lora_layers(backbone) or not hasattr(backbone, "peft_config"):
        raise ValueError(
            "backbone has no LoRA layers; apply_finetuning(backbone, FinetuneConfig(strategy='lora', "
            "...)) first"
        )


def lora_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights only, as a flat ``{name: tensor}`` (keys like ``….q_proj.lora_A.weight``).

    Tensors are detached contiguous copies, so the dict can go straight to
    ``safetensors.torch.save_file``.
    """
    from peft import get_peft_model_state_dict

    _require_lora(backbone)
    sd = get_peft_model_state_dict(backbone, adapter_name=_ADAPTER, save_embedding_layers=False)
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def load_lora_state_dict(backbone: nn.Module, sd: Mapping[str, torch.Tensor]) -> None:
    """Load LoRA weights saved by :func:`lora_state_dict` into an identically adapted backbone.

    Raises:
        ValueError: the backbone has no LoRA layers, or keys are missing / unexpected / of the
            wrong shape (the message lists them).
    """
    from peft import set_peft_model_state_dict

    _require_lora(backbone)
    expected = lora_state_dict(backbone)
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = sorted(
        k for k in set(expected) & set(sd) if tuple(sd[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or shapes:
        detail = "; ".join(
            f"{label} ({len(keys)}): {keys[:4]}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", shapes),
            )
            if keys
        )
        raise ValueError(
            f"LoRA state dict does not fit this backbone's adapters (same LoRA config needed): {detail}"
        )
    result: Any = set_peft_model_state_dict(backbone, dict(sd), adapter_name=_ADAPTER)
    bad = [k for k in result.unexpected_keys if "lora_" in k]
    if bad:  # pragma: no cover - guarded by the key check above
        raise ValueError(f"LoRA keys not loaded: {bad[:4]}")


def merge_lora(backbone: Backbone) -> Backbone:
    """Merge LoRA into the base weights and remove the LoRA layers, in place.

    Afterwards module and state-dict names are the original ones again (``….q_proj.weight``) and
    the outputs equal the adapted model's (up to float rounding). The merged weights keep
    ``requires_grad=False``. A backbone without LoRA layers is returned unchanged.
    """
    layers = _lora_layers(backbone)
    if not layers:
        logger.info("merge_lora: backbone has no LoRA layers; nothing to merge")
        return backbone
    for name, layer in layers.items():
        layer.merge(safe_merge=True, adapter_names=[_ADAPTER])
        parent_name, _, child = name.rpartition(".")
        parent = backbone.get_submodule(parent_name) if parent_name else backbone
        setattr(parent, child, layer.get_base_layer())
    if hasattr(backbone, "peft_config"):
        del backbone.peft_config
    return backbone
