"""The embedded default model: a small character-level LLaDA-style DLM trained on Shakespeare.

It is a stock ``LlamaForCausalLM`` run bidirectionally (see
:func:`dlmsearch.models.diffusion.bidirectional_attention_mask`), so every code path that serves
it also serves real Llama-named checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from transformers import LlamaConfig

EMBEDDED_MODEL_NAME = "shakespeare-char"
#: Names ``load_model`` resolves to a shipped folder.
EMBEDDED_MODELS: tuple[str, ...] = (EMBEDDED_MODEL_NAME,)


@dataclass(frozen=True)
class EmbeddedModelShape:
    """Architecture of a character-level Llama DLM."""

    hidden_size: int = 192  # d=192 x 6 layers learnt fastest per CPU-minute among sizes tried
    num_layers: int = 6
    num_heads: int = 6
    intermediate_size: int = 512  # ~2.67x hidden, the SwiGLU ratio Llama uses
    max_length: int = 128  # longest prompt + answer the model is trained on

    def llama_config(self, vocab_size: int) -> LlamaConfig:
        """The transformers config for this shape with the given vocabulary size."""
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            max_position_embeddings=self.max_length,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
        )


def embedded_model_dir(name: str = EMBEDDED_MODEL_NAME) -> Path:
    """Folder of a shipped model (safetensors, config, tokenizer, model card)."""
    folder = Path(str(resources.files("dlmsearch.models").joinpath("embedded", name)))
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"embedded model {name!r} is not shipped in {folder}")
    return folder
