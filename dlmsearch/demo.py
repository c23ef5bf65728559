"""The quickstart job behind ``make demo``.

Until the search lands, the quickstart shows the embedded model generating at several step
counts (the biggest latency lever of a DLM) and writes the samples to a Markdown report.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from dlmsearch.models.loading import load_model
from dlmsearch.models.sampler import generate

DEMO_PROMPTS: tuple[str, ...] = ("ROMEO.\n", "HAMLET.\nTo be, or not to be", "KING.\n", "First Witch.\n")
DEMO_STEPS: tuple[int, ...] = (64, 16)


def run_sampler_demo(out: Path, gen_length: int = 64, block_length: int = 16) -> Path:
    """Generate from :data:`DEMO_PROMPTS` at each of :data:`DEMO_STEPS`; return the report path."""
    adapter = load_model()
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for steps in tqdm(DEMO_STEPS, desc="demo: step counts"):
        start = time.perf_counter()
        samples = []
        for prompt in DEMO_PROMPTS:
            ids = generate(adapter, adapter.encode(prompt), gen_length=gen_length, steps=steps,
                           block_length=block_length)
            samples.append(adapter.decode(ids[0]))
        seconds = time.perf_counter() - start
        body = "\n\n".join(f"```\n{s}\n```" for s in samples)
        sections.append(f"## {steps} steps ({seconds / len(DEMO_PROMPTS):.2f} s per sample on this machine)\n\n"
                        f"{body}")
    report = out / "report.md"
    report.write_text(f"# dlmsearch demo: {adapter.name}, {gen_length} generated characters\n\n"
                      + "\n\n".join(sections) + "\n")
    return report
