"""stable-baselines3 and sb3-contrib on the envs as they are: the SB3VecEnv adapter over the native vector envs,
``make_vec_env("TextGen-IMDB-v0")`` (rgb_array frames) and ``MaskablePPO`` reading ``action_masks()``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401

pytest.importorskip("stable_baselines3")
from envs.interop.sb3 import SB3VecEnv  # noqa: E402


def catgrid(mode: str, **kw) -> SB3VecEnv:
    return SB3VecEnv(gym.make_vec("CatGrid-v0", num_envs=2, vectorization_mode="vector_entry_point", slip=0.0,
                                  autoreset_mode=mode, **kw))


@pytest.mark.parametrize("mode", ["SameStep", "Disabled"])
def test_adapter_autoresets_with_terminal_observation_and_truncation_flag(mode):
    venv = catgrid(mode, max_episode_steps=3)
    assert venv.reset().tolist() == [[0, 0], [0, 0]]
    seen = []
    for a in ([3, 2], [3, 2], [1, 2]):  # row 0: right, right, down into the bathtub; row 1 bumps the wall
        obs, rewards, dones, infos = venv.step(np.array(a))
        seen.append((dones.tolist(), rewards.tolist()))
    assert seen[-1] == ([True, True], [-10.0, 0.0])  # row 0 terminates at step 3, row 1 is truncated there
    assert obs.tolist() == [[0, 0], [0, 0]]  # both restarted in the same step, as SB3 expects
    assert infos[0]["terminal_observation"].tolist() == [2, 1] and infos[0]["TimeLimit.truncated"] is False
    assert infos[1]["terminal_observation"].tolist() == [0, 0] and infos[1]["TimeLimit.truncated"] is True
    assert not any(any(dones) for dones, _ in seen[:-1])


def test_adapter_refuses_next_step_and_says_how_to_build_the_env():
    with pytest.raises(ValueError, match="autoreset_mode='SameStep'"):
        SB3VecEnv(gym.make_vec("CatGrid-v0", num_envs=2, vectorization_mode="vector_entry_point"))


def test_make_vec_env_draws_text_frames_and_maskable_ppo_respects_the_mask(kw):
    """SB3's make_vec_env passes render_mode="rgb_array"; MaskablePPO finds action_masks() without a wrapper. The
    policy is biased hard toward EOS, which the env refuses (ValueError) before min_new_tokens: only the mask
    keeps it from choosing EOS."""
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from stable_baselines3.common.env_util import make_vec_env

    text_kw = {**kw, "max_new_tokens": 4, "min_new_tokens": 3, "prompt_max_len": 4}
    venv = make_vec_env("TextGen-IMDB-v0", n_envs=1, seed=0, env_kwargs=text_kw)
    obs = venv.reset()
    frame = venv.get_images()[0]
    assert frame.shape == (240, 640, 3) and frame.dtype == np.uint8 and (frame < 128).any()  # text drawn
    eos = kw["tokenizer"].eos_token_id
    model = sb3_contrib.MaskablePPO("MultiInputPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0,
                                    device="cpu", learning_rate=0.0)
    with torch.no_grad():
        model.policy.action_net.bias[eos] = 50.0
    masks = np.stack(venv.env_method("action_masks"))  # (1, V): EOS masked at the episode start
    assert masks.shape == (1, venv.action_space.n) and not masks[0, eos] and masks.sum() == masks.size - 1
    assert model.predict(obs, deterministic=True)[0][0] == eos  # unmasked, the policy picks EOS
    model.learn(32)  # the env raises on a masked EOS: 32 steps, 8 episodes, none ever chose it early
    assert model.num_timesteps == 32
    assert all(ep["l"] == 4 for ep in model.ep_info_buffer)  # EOS (allowed at token 4) or the limit


def test_adapter_splits_vector_action_masks_into_rows(kw):
    venv = SB3VecEnv(gym.make_vec("TextGen-IMDB-v0", num_envs=3, vectorization_mode="vector_entry_point",
                                  autoreset_mode="SameStep", **{**kw, "min_new_tokens": 1}))
    venv.reset()
    masks = venv.env_method("action_masks")
    eos = kw["tokenizer"].eos_token_id
    assert len(masks) == 3 and all(m.shape == (venv.action_space.n,) and not m[eos] for m in masks)
    assert venv.get_attr("kl_coef") == [kw["kl_coef"]] * 3
