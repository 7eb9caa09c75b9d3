"""SAME_STEP and DISABLED autoreset in both native vector envs (envs.autoreset), besides the default NEXT_STEP."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from env_helpers import real_tokens, ref_logprobs
from gymnasium.vector import AutoresetMode

import envs  # noqa: F401
from envs.catgrid_vector import CatGridVectorEnv


def transitions_by_row(mode: AutoresetMode, actions: np.ndarray) -> tuple[list[list], list[list]]:
    """Per row: the (obs, reward, terminated, truncated) of every real move, and the final obs of each episode;
    row i takes ``actions[k, i]`` as its k-th real move (reset steps of NEXT_STEP take none)."""
    n = actions.shape[1]
    env = CatGridVectorEnv(num_envs=n, max_episode_steps=7, slip=0.0, autoreset_mode=mode)
    env.reset(seed=0)
    moves, finals, used = [[] for _ in range(n)], [[] for _ in range(n)], np.zeros(n, dtype=int)
    resetting = np.zeros(n, dtype=bool)
    while used.min() < actions.shape[0] - 1:
        obs, reward, term, trunc, info = env.step(actions[used, np.arange(n)])
        for i in np.flatnonzero(~resetting):
            moves[i].append((tuple(obs[i]) if not (term[i] or trunc[i]) else None, reward[i], term[i], trunc[i]))
            if term[i] or trunc[i]:
                finals[i].append(tuple(info["final_obs"][i]) if mode == AutoresetMode.SAME_STEP else tuple(obs[i]))
                if mode == AutoresetMode.SAME_STEP:
                    assert tuple(obs[i]) == tuple(env.tables.xy[env.tables.start]) and info["_final_obs"][i]
        used += ~resetting
        resetting = (term | trunc) if mode == AutoresetMode.NEXT_STEP else np.zeros(n, dtype=bool)
    return moves, finals


def test_catgrid_same_step_is_next_step_without_the_reset_steps():
    actions = np.random.default_rng(0).integers(0, 4, size=(60, 6))
    next_moves, next_finals = transitions_by_row(AutoresetMode.NEXT_STEP, actions)
    same_moves, same_finals = transitions_by_row(AutoresetMode.SAME_STEP, actions)
    n = min(len(r) for r in next_moves + same_moves)
    assert [r[:n] for r in same_moves] == [r[:n] for r in next_moves]
    assert sum(len(f) for f in next_finals) >= 10  # many episodes ended (terminations and truncations)
    assert [f[:2] for f in same_finals] == [f[:2] for f in next_finals]


def test_catgrid_disabled_waits_for_a_masked_reset():
    env = gym.make_vec("CatGrid-v0", num_envs=3, vectorization_mode="vector_entry_point", slip=0.0,
                       autoreset_mode="Disabled")
    assert env.autoreset_mode is AutoresetMode.DISABLED and env.metadata["autoreset_mode"] is AutoresetMode.DISABLED
    env.reset(seed=0)
    for a in ([3, 1, 2], [3, 2, 2], [1, 2, 2]):  # row 0: right, right, down into the bathtub; row 1 to (0, 1)
        obs, _, term, _, _ = env.step(np.array(a))
    assert term.tolist() == [True, False, False] and obs[1].tolist() == [0, 1]
    with pytest.raises(RuntimeError, match="reset_mask"):
        env.step(np.array([0, 0, 0]))
    others = obs[1:].copy()
    obs, _ = env.reset(options={"reset_mask": np.array([True, False, False])})
    assert obs[0].tolist() == [0, 0] and (obs[1:] == others).all()  # only row 0 restarted
    env.step(np.array([3, 0, 0]))  # and the env steps again


def test_bad_autoreset_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="NEXT_STEP, SAME_STEP or DISABLED"):
        CatGridVectorEnv(num_envs=2, autoreset_mode="sometimes")
    assert CatGridVectorEnv(num_envs=2).autoreset_mode is AutoresetMode.NEXT_STEP


def check_reference_exact(venv, model, steps: int, rng: np.random.Generator) -> int:
    """Random tokens for ``steps`` steps; every ref_logprob equals teacher forcing of the row's episode, and the
    rows (partially) restart: SAME_STEP by itself, DISABLED by a masked reset. Returns the episodes checked."""
    obs, _ = venv.reset(seed=0)
    n = venv.num_envs
    prompts, acts, refs, checked = [real_tokens(obs, i) for i in range(n)], [[] for _ in range(n)], \
        [[] for _ in range(n)], 0
    for _ in range(steps):
        a = rng.integers(5, 200, size=n)  # never EOS (id 0): rows end at their drawn lengths, not together
        obs, _, term, _, info = venv.step(a)
        for i in range(n):
            acts[i].append(int(a[i]))
            refs[i].append(info["ref_logprob"][i])
        for i in np.flatnonzero(term):
            np.testing.assert_allclose(refs[i], ref_logprobs(model, prompts[i], acts[i]), atol=1e-4)
            if venv.autoreset_mode == AutoresetMode.SAME_STEP:
                assert real_tokens(info["final_obs"][i]) == prompts[i] + acts[i]
            checked += 1
        if venv.autoreset_mode == AutoresetMode.DISABLED and term.any():
            obs, _ = venv.reset(options={"reset_mask": term})
        for i in np.flatnonzero(term):
            prompts[i], acts[i], refs[i] = real_tokens(obs, i), [], []
            assert len(prompts[i]) == int(info["prompt_len"][i]) or venv.autoreset_mode == AutoresetMode.DISABLED
    return checked


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
def test_textgen_same_step_and_disabled_keep_the_reference_exact(kw, mode):
    venv = gym.make_vec("TextGen-IMDB-v0", num_envs=3, vectorization_mode="vector_entry_point",
                        autoreset_mode=mode, **{**kw, "max_new_tokens": (2, 5)})
    assert venv.autoreset_mode is mode
    assert check_reference_exact(venv, venv.unwrapped.core.ref_model, 16, np.random.default_rng(0)) >= 6
    if mode == AutoresetMode.DISABLED:
        venv.reset(seed=0)
        while not venv.step(np.full(3, 7))[2].any():
            pass
        with pytest.raises(RuntimeError, match="reset_mask"):
            venv.step(np.full(3, 7))


def test_the_project_collector_refuses_other_modes():
    """This project's rollout collector masks NEXT_STEP reset steps: another mode would be learned from wrongly."""
    from agents import Agent, AgentConfig, RolloutCollector
    from agents.networks import build_network

    for mode in ("SameStep", "Disabled"):
        venv = gym.make_vec("CatGrid-v0", num_envs=2, vectorization_mode="vector_entry_point", autoreset_mode=mode)
        agent = Agent(build_network(venv.single_observation_space, venv.single_action_space), AgentConfig())
        with pytest.raises(ValueError, match="NEXT_STEP autoreset"):
            RolloutCollector(venv, agent, num_steps=4)
