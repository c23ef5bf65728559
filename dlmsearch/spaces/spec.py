"""What a search space spans: the knobs a study turns (:class:`SpaceSpec`) and the generation its
Plans are for (:class:`GenerationSpec`); the study spec's ``space`` and ``generation`` sections.

Plain frozen dataclasses; :func:`dlmsearch.search.spec.spec_from_dict` validates the YAML that
builds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TIMESTEP_SCHEDULES: tuple[str, ...] = ("free", "rising", "falling")


@dataclass(frozen=True)
class SparsityRange:
    """Sparsity values the search may pick: ``min``, ``min + step``, ..., ``max``."""

    min: float = 0.0
    max: float = 0.5
    step: float = 0.1

    def values(self) -> tuple[float, ...]:
        """Every allowed value, rounded to 6 decimals."""
        count = int(round((self.max - self.min) / self.step)) if self.step > 0 else 0
        return tuple(round(self.min + i * self.step, 6) for i in range(count + 1))


@dataclass(frozen=True)
class SpaceSpec:
    """Which knobs the search turns and over which values (see :mod:`dlmsearch.spaces`)."""

    layer_grouping: str = "block_role"  # one setting per (block, attention | MLP): ~20-60 knobs on 6-32 blocks
    layer_groups: int = 4  # number of contiguous block groups when layer_grouping is "contiguous"
    timestep_groups: int = 2  # early (noisy) and late (refining) denoising steps
    timestep_schedule: str = "free"  # free: bits per timestep group; rising / falling: monotone schedule
    weight_bits: tuple[int, ...] = (2, 3, 4, 8, 16)
    act_bits: tuple[int, ...] = (16,)
    sparsity: SparsityRange = field(default_factory=SparsityRange)
    prune_methods: tuple[str, ...] = ("wanda",)
    structures: tuple[str, ...] = ("unstructured",)
    quant_method: str = "rtn"
    group_size: int = 64
    steps: tuple[int, ...] = (16, 32, 64)
    block_lengths: tuple[int, ...] = (16, 32, 64)
    weight_storage: str = "nested"


@dataclass(frozen=True)
class GenerationSpec:
    """What one generation looks like: the workload that latency and quality refer to."""

    gen_length: int = 64
    prompt_length: int = 32  # tokens of prompt the cost model counts per step
    remasking: str = "low_confidence"
