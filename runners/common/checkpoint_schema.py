"""What the files of a checkpoint must hold, checked on load so that a wrong file is named with its wrong field.

The manifest catches truncated and altered files; these checks catch files whose hashes are valid but whose
content is not what this version writes (hand-edited, written by another tool, re-hashed): ``state.json`` and
``resume.pt`` field by field, ``optimizer.pt`` against the parameters it must fit (shape and dtype of every
moment), and the weights for non-finite values. Each function returns a one-line problem or None.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch


def _int(value: Any, lo: int = 0) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= lo


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return type(value).__name__


def state_problem(state: Any) -> str | None:
    """The first wrong field of a ``state.json`` (parsed), or None."""
    if not isinstance(state, dict):
        return f"expected a JSON object, got {_kind(state)}"
    required = {"config": (dict, "an object"), "network": (str, "a string")}
    for key, (kind, what) in required.items():
        if not isinstance(state.get(key), kind):
            return f"field {key!r} must be {what}, got {state.get(key)!r}"
    for key in ("global_step", "num_updates"):
        if not _int(state.get(key)):
            return f"field {key!r} must be an integer >= 0, got {state.get(key)!r}"
    if "world_size" in state and not _int(state["world_size"], 1):
        return f"field 'world_size' must be an integer >= 1, got {state['world_size']!r}"
    if "kl_coef" in state and not _number(state["kl_coef"]):
        return f"field 'kl_coef' must be a number, got {state['kl_coef']!r}"
    return _schedule_problem(state.get("lr_schedule"))


def _schedule_problem(schedule: Any) -> str | None:
    if schedule is None:
        return None
    if not isinstance(schedule, dict):
        return f"field 'lr_schedule' must be an object, got {schedule!r}"
    for key in ("total_updates", "start_update"):
        if not _int(schedule.get(key)):
            return f"field 'lr_schedule.{key}' must be an integer >= 0, got {schedule.get(key)!r}"
    if not _number(schedule.get("start_fraction")):
        return f"field 'lr_schedule.start_fraction' must be a number, got {schedule.get('start_fraction')!r}"
    return None


def _rngs_problem(rngs: Any) -> str | None:
    if not isinstance(rngs, dict):
        return f"field 'rngs' must be a dict, got {_kind(rngs)}"
    t = rngs.get("torch")
    if not (isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.ndim == 1):
        return f"field 'rngs.torch' must be a 1-D uint8 tensor (torch.get_rng_state()), got {_kind(t)}"
    n = rngs.get("numpy")
    if not (isinstance(n, (list, tuple)) and len(n) == 5 and isinstance(n[0], str) and isinstance(n[1], np.ndarray)):
        return "field 'rngs.numpy' must be numpy.random.get_state() as a list of 5 (name, key array, ...)"
    p = rngs.get("python")
    if not (isinstance(p, (list, tuple)) and len(p) == 3 and isinstance(p[1], (list, tuple))):
        return "field 'rngs.python' must be random.getstate() as a list of 3 (version, state, gauss)"
    return None


def resume_problem(state: Any) -> str | None:
    """The first wrong field of a ``resume.pt`` (loaded), or None."""
    if not isinstance(state, dict):
        return f"expected a dict, got {_kind(state)}"
    problem = _rngs_problem(state.get("rngs"))
    if problem:
        return problem
    if not isinstance(state.get("collector"), dict):
        return f"field 'collector' must be a dict, got {_kind(state.get('collector'))}"
    for key in ("agent_carry", "env", "episode_stats"):
        if state.get(key) is not None and not isinstance(state[key], dict):
            return f"field {key!r} must be a dict or absent, got {_kind(state[key])}"
    return None


def optimizer_problem(saved: Any, optimizer: torch.optim.Optimizer) -> str | None:
    """How ``saved`` (an ``optimizer.state_dict()``) does not fit ``optimizer``'s parameters, or None."""
    if not (isinstance(saved, dict) and isinstance(saved.get("state"), dict)
            and isinstance(saved.get("param_groups"), list)):
        return "expected an optimizer state_dict with 'state' and 'param_groups'"
    params = [p for group in optimizer.param_groups for p in group["params"]]
    try:
        ids = [i for group in saved["param_groups"] for i in group["params"]]
    except (TypeError, KeyError):
        return "every entry of 'param_groups' must list its 'params'"
    if len(ids) != len(params):
        return f"it holds {len(ids)} parameters, the network has {len(params)}"
    by_id = dict(zip(ids, params, strict=True))
    for pid, moments in saved["state"].items():
        if pid not in by_id or not isinstance(moments, dict):
            return f"state of unknown parameter {pid!r}"
        param = by_id[pid]
        for key, value in moments.items():
            if key == "step" or not isinstance(value, torch.Tensor):
                continue
            if value.shape != param.shape or value.dtype != param.dtype:
                return (f"{key} of parameter {pid} is {tuple(value.shape)} {value.dtype}, the parameter is "
                        f"{tuple(param.shape)} {param.dtype}")
    return None


def non_finite(net: torch.nn.Module) -> str | None:
    """The name of the first parameter holding NaN or inf, or None."""
    named = list(net.named_parameters())
    if not named:
        return None
    finite = torch.stack([torch.isfinite(p).all() for _, p in named])  # one host sync for the whole network
    if bool(finite.all()):
        return None
    return f"{named[int((~finite).nonzero()[0])][0]} has NaN or inf"
