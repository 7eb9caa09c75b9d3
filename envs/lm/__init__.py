"""The causal-LM runtime shared by the text env's frozen reference and the agent's policy.

- :mod:`envs.lm.loading`: device choice, loading a model and tokenizer, freezing.
- :mod:`envs.lm.kv_cache`: batched incremental decoding with a preallocated KV cache
  (:class:`IncrementalLM`), left-padded teacher-forced forwards, the fused GELU.
"""

from envs.lm.kv_cache import (
    IncrementalLM,
    attention_mask_for,
    forward_left_padded,
    fuse_gelu,
    padded_causal_mask,
)
from envs.lm.loading import (
    freeze,
    load_causal_lm,
    offline_hint,
    prepare_tokenizer,
    resolve_device,
)

__all__ = [
    "IncrementalLM", "attention_mask_for", "forward_left_padded", "freeze", "fuse_gelu", "load_causal_lm",
    "offline_hint", "padded_causal_mask", "prepare_tokenizer", "resolve_device",
]
