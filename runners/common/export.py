"""The trained text policy as a standard transformers model: ``<run dir>/policy/`` + the value head beside it.

After training on a text env, :func:`runners.train.train` calls :func:`export_policy`, which writes

    <run dir>/policy/                  config.json, model.safetensors, tokenizer files, generation_config.json
    <run dir>/value_head.safetensors   the value head (weight (1, D), bias (1,)), for resuming / reuse

``policy/`` is the causal LM alone (no value head), loadable anywhere::

    model = AutoModelForCausalLM.from_pretrained("runs/<run>/policy")
    tok = AutoTokenizer.from_pretrained("runs/<run>/policy")
    model.generate(**tok(["This movie"], return_tensors="pt"))  # samples as the policy was trained

and usable as ``gym.make("TextGen-IMDB-v0", model="runs/<run>/policy")`` or ``--model`` of a new run.
``generation_config.json`` reproduces the rollouts' sampling: the agent's temperature, top-k and top-p
(default: plain sampling at temperature 1), ``max_new_tokens`` (the upper end of a length range) and
``min_new_tokens``. Dropout is off in the config, as during RL training (the policy was trained without it).
:func:`load_policy` rebuilds the agent's network (LM + value head) from a run directory. Both files are written
atomically.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig, PreTrainedTokenizerBase

from agents.networks import CausalLMPolicy
from envs.lm import load_causal_lm
from runners.common.pretrained import save_pretrained_atomic

POLICY_DIR = "policy"
VALUE_HEAD_FILE = "value_head.safetensors"


def generation_config(lm: Any, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int,
                      min_new_tokens: int = 0, temperature: float = 1.0, top_k: int = 0,
                      top_p: float = 1.0) -> GenerationConfig:
    """Sampling settings equal to the agent's (temperature, top-k, top-p) and the env's length limits."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    return GenerationConfig(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
                            max_new_tokens=max_new_tokens,
                            min_new_tokens=min_new_tokens or None, eos_token_id=eos,
                            pad_token_id=pad if pad is not None else eos,
                            bos_token_id=getattr(lm.config, "bos_token_id", None))


def export_policy(net: CausalLMPolicy, tokenizer: PreTrainedTokenizerBase, run_dir: str | os.PathLike,
                  max_new_tokens: int, min_new_tokens: int = 0, sampling: dict[str, Any] | None = None) -> Path:
    """Write ``run_dir/policy/`` (the LM, tokenizer, generation config) and ``run_dir/value_head.safetensors``;
    ``sampling``: the agent's ``temperature``/``top_k``/``top_p`` (:attr:`agents.config.AgentConfig.sampling`)."""
    if not isinstance(net, CausalLMPolicy):
        raise TypeError(f"only a causal-LM policy can be exported as a transformers model, got {type(net).__name__}")
    run_dir = Path(run_dir)
    gen = generation_config(net.lm, tokenizer, max_new_tokens, min_new_tokens, **(sampling or {}))
    target = save_pretrained_atomic(net.lm, tokenizer, run_dir / POLICY_DIR, extra=gen.save_pretrained)
    head = {k: v.detach().cpu().contiguous() for k, v in net.value_head.state_dict().items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{VALUE_HEAD_FILE}.", dir=run_dir)
    os.close(fd)
    try:
        save_file(head, tmp)  # no metadata: safetensors orders it by hash, the file would not be reproducible
        os.replace(tmp, run_dir / VALUE_HEAD_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_policy(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> CausalLMPolicy:
    """The agent's network from an exported run: ``policy/`` as the LM plus the saved value head."""
    run_dir = Path(run_dir)
    if not (run_dir / POLICY_DIR / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} holds no exported policy ({POLICY_DIR}/config.json); text runs of "
                                "runners.train write one at the end")
    lm, _ = load_causal_lm(str(run_dir / POLICY_DIR), device=device)
    net = CausalLMPolicy(lm)
    if (run_dir / VALUE_HEAD_FILE).is_file():
        net.value_head.load_state_dict(load_file(str(run_dir / VALUE_HEAD_FILE)))
    return net.to(device)
