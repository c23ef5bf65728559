"""Model adapters: the one view of a DLM that compressors, evaluators and cost models rely on.

An adapter names every compressible linear by its role (q, k, v, o, gate, up, down), exposes the
shape facts the cost models need, runs a bidirectional forward pass, and can capture attention
mass per key position. Each architecture is one small subclass, never an ``if`` chain.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from dlmsearch.models.diffusion import bidirectional_attention_mask

#: Roles of the linears inside one transformer block.
ROLES: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")
ATTENTION_ROLES = frozenset({"q", "k", "v", "o"})


@dataclass(frozen=True)
class LinearInfo:
    """One compressible linear layer: where it is, what it does, and its shape."""

    name: str  # full module name, e.g. "model.layers.0.self_attn.q_proj"
    role: str  # one of ROLES
    block: int  # index of the transformer block holding it
    in_features: int
    out_features: int


@dataclass(frozen=True)
class ModelShape:
    """Architecture facts the cost models and the Plan validation read."""

    architecture: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_length: int

    @property
    def fingerprint(self) -> str:
        """Short string identifying the architecture; a Plan records it to catch a wrong model."""
        return (f"{self.architecture}/L{self.num_layers}/d{self.hidden_size}/h{self.num_heads}"
                f"/kv{self.num_kv_heads}/hd{self.head_dim}/ff{self.intermediate_size}/V{self.vocab_size}")


@dataclass
class AttentionCapture:
    """Attention mass per key position collected while :meth:`DLMAdapter.capture_attention` is active.

    ``mass[layer]`` is a list with one (B, L) tensor per forward pass: the attention each key
    position receives, summed over heads and queries and divided by heads * queries (so each row
    sums to 1).
    """

    mass: dict[int, list[torch.Tensor]] = field(default_factory=dict)

    def record(self, layer: int, weights: torch.Tensor) -> None:
        """Add one layer's attention probabilities (B, H, Lq, Lk)."""
        per_key = weights.float().sum(dim=(1, 2)) / (weights.shape[1] * weights.shape[2])
        self.mass.setdefault(layer, []).append(per_key.detach().cpu())


class DLMAdapter(ABC):
    """Protocol every model family implements.

    - ``forward_logits(ids)`` is bidirectional: every position sees every other position.
    - ``linears()`` lists every compressible linear in block order, then role order.
    - The adapter never changes weights itself; compressors do, through ``get_module``.
    """

    def __init__(self, model: nn.Module, mask_token_id: int, tokenizer: Any = None,
                 name: str = "") -> None:
        self.model = model
        self.mask_token_id = int(mask_token_id)
        self.tokenizer = tokenizer
        self.name = name
        self._capture: AttentionCapture | None = None
        #: What apply_plan_ did to the model (a CompressionRecord), None while it is uncompressed.
        self.compression: Any = None

    @property
    @abstractmethod
    def shape(self) -> ModelShape:
        """Architecture facts."""

    @abstractmethod
    def block_prefix(self, index: int) -> str:
        """Module name of block ``index``."""

    @abstractmethod
    def role_suffixes(self) -> dict[str, str]:
        """Role -> module name relative to a block, e.g. ``{"q": "self_attn.q_proj", ...}``."""

    @abstractmethod
    def _forward(self, ids: torch.Tensor, output_attentions: bool) -> tuple[torch.Tensor, Any]:
        """Run the model; return logits and (when asked) per-layer attention probabilities."""

    def forward_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Bidirectional logits (B, L, V) for token ids (B, L)."""
        logits, attentions = self._forward(ids, output_attentions=self._capture is not None)
        if self._capture is not None:
            if not attentions or attentions[0] is None:
                raise RuntimeError(f"{type(self).__name__}: the model returned no attention maps; "
                                   "attention capture needs eager attention (output_attentions=True)")
            for layer, weights in enumerate(attentions):
                self._capture.record(layer, weights)
        return logits

    @contextlib.contextmanager
    def capture_attention(self) -> Iterator[AttentionCapture]:
        """Collect attention mass per key position of every forward pass inside the block."""
        capture = AttentionCapture()
        previous = self._switch_attention("eager")
        self._capture = capture
        try:
            yield capture
        finally:
            self._capture = None
            self._switch_attention(previous)

    def _switch_attention(self, implementation: str) -> str:
        """Set the attention implementation, returning the previous one."""
        config = getattr(self.model, "config", None)
        previous = getattr(config, "_attn_implementation", None) or implementation
        setter = getattr(self.model, "set_attn_implementation", None)
        if setter is not None and previous != implementation:
            setter(implementation)
        return previous

    def encode(self, text: str) -> torch.Tensor:
        """Token ids (1-D int64) of ``text`` with the model's tokenizer."""
        if self.tokenizer is None:
            raise ValueError(f"model {self.name!r} has no tokenizer; pass token ids instead of text")
        return torch.as_tensor(self.tokenizer.encode(text), dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> str:
        """Text of token ids with the model's tokenizer."""
        if self.tokenizer is None:
            raise ValueError(f"model {self.name!r} has no tokenizer to decode with")
        return str(self.tokenizer.decode(ids.tolist()))

    def blocks(self) -> list[nn.Module]:
        """The transformer blocks in order."""
        return [self.get_module(self.block_prefix(i)) for i in range(self.shape.num_layers)]

    def get_module(self, name: str) -> nn.Module:
        """The submodule called ``name``."""
        return self.model.get_submodule(name)

    def linears(self) -> list[LinearInfo]:
        """Every compressible linear, block by block, in :data:`ROLES` order."""
        infos = []
        suffixes = self.role_suffixes()
        for block in range(self.shape.num_layers):
            for role in ROLES:
                name = f"{self.block_prefix(block)}.{suffixes[role]}"
                module = self.get_module(name)
                in_f, out_f = linear_dims(module)
                infos.append(LinearInfo(name, role, block, in_f, out_f))
        return infos

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device


def linear_dims(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a linear-like module (compressed ones keep these attributes)."""
    in_f = getattr(module, "in_features", None)
    out_f = getattr(module, "out_features", None)
    if in_f is None or out_f is None:
        raise TypeError(f"{type(module).__name__} is not a linear layer")
    return int(in_f), int(out_f)


class HFDecoderAdapter(DLMAdapter):
    """transformers decoder models (Llama, Qwen2, ...) made bidirectional by a 4-D zero mask."""

    architecture: ClassVar[str] = ""

    def block_prefix(self, index: int) -> str:
        return f"model.layers.{index}"

    def role_suffixes(self) -> dict[str, str]:
        return {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
                "down": "mlp.down_proj"}

    @property
    def shape(self) -> ModelShape:
        cfg: Any = self.model.config
        decoder: Any = self.model.model
        heads = int(cfg.num_attention_heads)
        return ModelShape(
            architecture=self.architecture,
            num_layers=len(decoder.layers),
            hidden_size=int(cfg.hidden_size),
            num_heads=heads,
            num_kv_heads=int(getattr(cfg, "num_key_value_heads", None) or heads),
            head_dim=int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads),
            intermediate_size=int(cfg.intermediate_size),
            vocab_size=int(cfg.vocab_size),
            max_length=int(cfg.max_position_embeddings),
        )

    def _forward(self, ids: torch.Tensor, output_attentions: bool) -> tuple[torch.Tensor, Any]:
        param = next(self.model.parameters())
        mask = bidirectional_attention_mask(ids.shape[0], ids.shape[1], param.dtype, ids.device)
        out = self.model(input_ids=ids, attention_mask=mask, use_cache=False,
                         output_attentions=output_attentions)
        return out.logits, getattr(out, "attentions", None)


class LlamaAdapter(HFDecoderAdapter):
    """Llama-style bidirectional DLM: the embedded model and LLaDA-like checkpoints in Llama names."""

    architecture = "llama"


class Qwen2Adapter(HFDecoderAdapter):
    """Qwen2-style bidirectional DLM with grouped-query attention (Dream-like)."""

    architecture = "qwen2"


@dataclass(frozen=True)
class ModuleNamePatterns:
    """How a checkpoint with its own modelling code names its parts.

    ``block`` is a format string with ``{i}``; ``roles`` maps each role to a name inside a block;
    ``config_keys`` maps shape facts to the checkpoint config's attribute names.
    """

    block: str
    roles: dict[str, str]
    config_keys: dict[str, str]
    default_mask_token_id: int | None = None


#: LLaDA's own OLMo-style names (modeling_llada.py).
LLADA_PATTERNS = ModuleNamePatterns(
    block="model.transformer.blocks.{i}",
    roles={"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "attn_out", "gate": "ff_proj",
           "up": "up_proj", "down": "ff_out"},
    config_keys={"num_layers": "n_layers", "hidden_size": "d_model", "num_heads": "n_heads",
                 "num_kv_heads": "n_kv_heads", "intermediate_size": "mlp_hidden_size",
                 "vocab_size": "embedding_size", "max_length": "max_sequence_length"},
    default_mask_token_id=126336,
)

#: Patterns per ``model_type`` of checkpoints that bring their own modelling code.
REMOTE_CODE_PATTERNS: dict[str, ModuleNamePatterns] = {"llada": LLADA_PATTERNS}


class RemoteCodeAdapter(DLMAdapter):
    """A checkpoint folder with its own modelling code (``trust_remote_code``), mapped by names.

    The model is assumed bidirectional already (LLaDA's and Dream's own code are); it is called
    with token ids only.
    """

    def __init__(self, model: nn.Module, mask_token_id: int, patterns: ModuleNamePatterns,
                 tokenizer: Any = None, name: str = "") -> None:
        super().__init__(model, mask_token_id, tokenizer, name)
        self.patterns = patterns

    def block_prefix(self, index: int) -> str:
        return self.patterns.block.format(i=index)

    def role_suffixes(self) -> dict[str, str]:
        return dict(self.patterns.roles)

    @property
    def shape(self) -> ModelShape:
        cfg: Any = self.model.config
        values: dict[str, int] = {}
        for fact, key in self.patterns.config_keys.items():
            value = getattr(cfg, key, None)
            if value is not None:
                values[fact] = int(value)
        heads = values["num_heads"]
        return ModelShape(
            architecture=str(getattr(cfg, "model_type", "remote")),
            num_layers=values["num_layers"],
            hidden_size=values["hidden_size"],
            num_heads=heads,
            num_kv_heads=values.get("num_kv_heads", heads),
            head_dim=values["hidden_size"] // heads,
            intermediate_size=values["intermediate_size"],
            vocab_size=values["vocab_size"],
            max_length=values.get("max_length", 4096),
        )

    def _forward(self, ids: torch.Tensor, output_attentions: bool) -> tuple[torch.Tensor, Any]:
        kwargs = {"output_attentions": True} if output_attentions else {}
        out = self.model(input_ids=ids, **kwargs)
        logits = out.logits if hasattr(out, "logits") else out[0]
        return logits, getattr(out, "attentions", None)

