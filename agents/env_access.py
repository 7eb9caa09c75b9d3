"""Reaching through Gymnasium vector envs: attributes and methods of a native vector env or of the
sub-envs of a sync/async one, and sampling seeded for one evaluation without touching the caller's RNG."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import torch


def _is_wrapping_vector(base: Any) -> bool:
    return isinstance(base, (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv))


def _check_sub_attr(base: gym.vector.SyncVectorEnv | gym.vector.AsyncVectorEnv, name: str) -> None:
    """AttributeError unless the sub-envs have ``name`` (asked first: a failing lookup would
    shut an async env's workers down)."""
    if not base.call("has_wrapper_attr", name)[0]:
        raise AttributeError(f"the sub-environments have no attribute {name!r}")


def env_attr(envs: gym.vector.VectorEnv, name: str) -> Any:
    """Attribute ``name`` of a native vector env, or of the first sub-env of a sync/async one.

    Raises AttributeError when the env does not have it.
    """
    base: Any = envs.unwrapped
    if _is_wrapping_vector(base):
        _check_sub_attr(base, name)
        return base.get_attr(name)[0]
    return getattr(base, name)


def env_call(envs: gym.vector.VectorEnv, name: str, *args: Any) -> Any:
    """Call method ``name`` of a native vector env, or of the first sub-env of a sync/async one."""
    base: Any = envs.unwrapped
    if _is_wrapping_vector(base):
        _check_sub_attr(base, name)
        return base.call(name, *args)[0]
    return getattr(base, name)(*args)


def set_env_attr(envs: gym.vector.VectorEnv, name: str, value: Any) -> None:
    """Set attribute ``name`` on a native vector env or on every sub-env."""
    base: Any = envs.unwrapped
    if _is_wrapping_vector(base):
        base.set_attr(name, value)
    else:
        setattr(base, name, value)


def get_kl_coef(envs: gym.vector.VectorEnv) -> float | None:
    """β if the env declares ``kl_coef`` (KL shaping split between env and agent), else None."""
    try:
        return float(env_attr(envs, "kl_coef"))
    except AttributeError:
        return None


@contextlib.contextmanager
def seeded_sampling(seed: int | None, device: torch.device) -> Iterator[None]:
    """Inside: torch's RNG (which :meth:`Agent.sample` draws from) seeded with ``seed``, so an evaluation with a seed
    samples the same actions every time; outside: the caller's RNG stream as it was. ``seed=None``: no change."""
    if seed is None:
        yield
        return
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield
