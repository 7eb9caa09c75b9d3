"""Tiny random causal LMs of the families users fine-tune, built from a config (2 layers, width 32): the
architecture matrix of the LM runtime, the env and the agent.

Sliding windows are 4 tokens (shorter than the test sequences), Gemma 2 soft-caps its logits, Cohere scales
them and Granite divides them, OPT comes in both shapes (``word_embed_proj_dim`` equal to and smaller than
``hidden_size``, the facebook/opt-350m shape).
"""

from __future__ import annotations

from typing import Any

import torch
import transformers as tf
from transformers import AutoModelForCausalLM, PreTrainedModel

FAMILIES = ("gpt2", "llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "phi3", "pythia", "opt", "opt_proj",
            "cohere", "granite")
WINDOW = 4


def tiny_config(family: str, vocab_size: int = 256, pad: int = 0, bos: int = 1, eos: int = 2) -> Any:
    ids = {"pad_token_id": pad, "bos_token_id": bos, "eos_token_id": eos}
    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, **ids)
    small = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=128, **ids)
    builders = {
        "gpt2": lambda: tf.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=128, **ids),
        "llama": lambda: tf.LlamaConfig(**common),
        "qwen2": lambda: tf.Qwen2Config(**common, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
        "qwen3": lambda: tf.Qwen3Config(**common, head_dim=8),
        "mistral": lambda: tf.MistralConfig(**common, sliding_window=WINDOW),
        "gemma2": lambda: tf.Gemma2Config(**common, head_dim=8, sliding_window=WINDOW, final_logit_softcapping=2.0),
        "gemma3": lambda: tf.Gemma3TextConfig(**common, head_dim=8, sliding_window=WINDOW, sliding_window_pattern=2),
        "phi3": lambda: tf.Phi3Config(**common),
        "pythia": lambda: tf.GPTNeoXConfig(**small, intermediate_size=64),
        "opt": lambda: tf.OPTConfig(**small, ffn_dim=64, word_embed_proj_dim=32),
        "opt_proj": lambda: tf.OPTConfig(**small, ffn_dim=64, word_embed_proj_dim=16),
        "cohere": lambda: tf.CohereConfig(**common, logit_scale=4.0),
        "granite": lambda: tf.GraniteConfig(**common, logits_scaling=0.25),
    }
    return builders[family]()


def tiny_model(family: str, seed: int = 0, **ids: int) -> PreTrainedModel:
    """A seeded random model of ``family`` in eval mode. Weights are scaled up (std 0.2) so that logits spread
    widely and a wrong mask, scale or soft-cap shows as a large difference."""
    torch.manual_seed(seed)
    config = tiny_config(family, **ids)
    if hasattr(config, "initializer_range"):
        config.initializer_range = 0.2
    if family.startswith("opt"):
        config.init_std = 0.2
    return AutoModelForCausalLM.from_config(config).eval()
