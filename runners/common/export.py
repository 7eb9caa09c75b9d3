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

import copy
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerBase

from agents.networks import CausalLMPolicy
from envs.lm import load_causal_lm
from runners.common.pretrained import save_pretrained_atomic

POLICY_DIR = "policy"
MERGED_DIR = "policy-merged"
VALUE_HEAD_FILE = "value_head.safetensors"


def generation_config(lm: Any, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int,
                      min_new_tokens: int = 0, eos_token_ids: Sequence[int] | None = None,
                      temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> GenerationConfig:
    """Sampling settings equal to the agent's (temperature, top-k, top-p), the env's length limits, and every id
    that ended an episode (``eos_token_ids``, default the tokenizer's EOS) as ``eos_token_id``."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ids = [int(i) for i in eos_token_ids] if eos_token_ids is not None and len(eos_token_ids) else [eos]
    stop: int | list[int] = ids[0] if len(ids) == 1 else ([eos] if eos in ids else []) + [i for i in ids if i != eos]
    return GenerationConfig(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
                            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None, eos_token_id=stop,
                            pad_token_id=pad if pad is not None else eos,
                            bos_token_id=getattr(lm.config, "bos_token_id", None))


def _probe(net: CausalLMPolicy) -> torch.Tensor:
    vocab = int(net.logits_head.weight.shape[0])
    return ((torch.arange(12) * 7919 + 5) % vocab)[None].to(net.device)  # (1, 12) a fixed spread of ids


def _check_reload(net: CausalLMPolicy, directory: Path, adapter: bool) -> None:
    """Reload what was just written to ``directory`` and refuse it unless it gives the trained policy's logits
    (e.g. weights saved under names ``from_pretrained`` does not know would reload as random ones)."""
    ids = _probe(net)
    with torch.no_grad():
        want = net.lm(input_ids=ids).logits.float()  # (1, 12, V)
        if adapter:  # the base without the adapter layers, plus the saved adapter (as PeftModel.from_pretrained)
            from peft import PeftModel

            base = copy.deepcopy(net.peft).unload()
            loaded: Any = PeftModel.from_pretrained(base, str(directory))
        else:
            loaded = AutoModelForCausalLM.from_pretrained(str(directory), dtype=net.lm.dtype)
            loaded = loaded.to(net.device)
        got = loaded.eval()(input_ids=ids).logits.float()
    tol = (1e-4 if net.lm.dtype == torch.float32 else 5e-2) * max(1.0, float(want.abs().max()))
    err = float((got - want).abs().max())
    if not err <= tol:
        raise RuntimeError(f"the export {directory} reloads to different logits than the trained policy (max "
                           f"difference {err:.3g} > {tol:.3g}); nothing was written. Please report this model type.")


def export_policy(net: CausalLMPolicy, tokenizer: PreTrainedTokenizerBase, run_dir: str | os.PathLike,
                  max_new_tokens: int, min_new_tokens: int = 0, eos_token_ids: Sequence[int] | None = None,
                  merged: bool = False, sampling: dict[str, Any] | None = None) -> Path:
    """Write ``run_dir/policy/`` (the LM, or a LoRA policy's adapter as peft saves it; tokenizer, generation
    config) and ``run_dir/value_head.safetensors``; with ``merged``, a LoRA policy also gets
    ``run_dir/policy-merged/``, the adapter merged into a plain transformers model. Each directory is reloaded
    before it is put in place and must give the trained policy's logits. ``sampling``: the agent's
    ``temperature``/``top_k``/``top_p`` (:attr:`agents.config.AgentConfig.sampling`) for the generation config."""
    if not isinstance(net, CausalLMPolicy):
        raise TypeError(f"only a causal-LM policy can be exported as a transformers model, got {type(net).__name__}")
    run_dir = Path(run_dir)
    gen = generation_config(net.lm, tokenizer, max_new_tokens, min_new_tokens, eos_token_ids, **(sampling or {}))
    adapter = net.peft is not None

    def finish(as_adapter: bool) -> Callable[[Path], None]:
        def extra(directory: Path) -> None:
            gen.save_pretrained(directory)
            _check_reload(net, directory, as_adapter)
        return extra

    target = save_pretrained_atomic(net.peft if adapter else net.lm, tokenizer, run_dir / POLICY_DIR,
                                    extra=finish(adapter))
    if adapter and merged:
        plain = copy.deepcopy(net.peft).merge_and_unload()
        save_pretrained_atomic(plain, tokenizer, run_dir / MERGED_DIR, extra=finish(False))
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
    policy = run_dir / POLICY_DIR
    if (policy / "adapter_config.json").is_file():  # a LoRA run: the base model named there + the adapter
        try:
            from peft import AutoPeftModelForCausalLM
        except ImportError:
            raise ImportError(f"{policy} holds a LoRA adapter, which loads with peft: pip install 'rlhf-gym[lora]'"
                              ) from None
        net = CausalLMPolicy(AutoPeftModelForCausalLM.from_pretrained(str(policy)).to(device))
    elif not (policy / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} holds no exported policy ({POLICY_DIR}/config.json); text runs of "
                                "runners.train write one at the end")
    else:
        lm, _ = load_causal_lm(str(policy), device=device)
        net = CausalLMPolicy(lm)
    if (run_dir / VALUE_HEAD_FILE).is_file():
        net.value_head.load_state_dict(load_file(str(run_dir / VALUE_HEAD_FILE)))
    return net.to(device)
