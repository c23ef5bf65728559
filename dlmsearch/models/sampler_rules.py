"""LLaDA's sampler constraints, without torch: what a Plan, a study spec and the sampler all check.

``gen_length`` splits into ``gen_length // block_length`` blocks, each of ``steps // num_blocks``
steps committing at least one token per step.
"""

from __future__ import annotations

REMASKING_STRATEGIES: tuple[str, ...] = ("low_confidence", "random")


class SamplerSettingsError(ValueError):
    """Sampler arguments that violate LLaDA's constraints."""


SettingProblem = tuple[str, object, str]


def check_sampler_settings(gen_length: int, steps: int, block_length: int,
                           remasking: str) -> list[SettingProblem]:
    """Every violated constraint as ``(field, value, what is allowed)``; empty when valid."""
    problems: list[SettingProblem] = []
    for name, value in (("gen_length", gen_length), ("steps", steps), ("block_length", block_length)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append((name, value, "a positive integer"))
    if remasking not in REMASKING_STRATEGIES:
        problems.append(("remasking", remasking, ", ".join(REMASKING_STRATEGIES)))
    if problems:
        return problems
    if gen_length % block_length:
        problems.append(("block_length", block_length, f"a divisor of gen_length={gen_length}"))
        return problems
    num_blocks = gen_length // block_length
    if steps % num_blocks:
        problems.append(("steps", steps, f"a multiple of the number of blocks (gen_length // "
                                         f"block_length = {num_blocks})"))
    elif steps // num_blocks > block_length:
        problems.append(("steps", steps, f"at most {num_blocks * block_length} (one token per step "
                                         f"and block at least; block_length={block_length})"))
    return problems
