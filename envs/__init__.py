"""Gymnasium environments of the project, registered on ``import envs``.

- ``CatGrid-v0``: a stochastic gridworld (a cat, brooms, a bathtub and meat) with an exact
  optimum by value iteration; natively vectorized for ``gym.make_vec``.
- ``TextGen-IMDB-v0``: text generation as an MDP (state = tokens so far, action = next token)
  rewarded by a sentiment score with per-token KL shaping toward a frozen reference LM.
- ``TextGen-v0``: the same with your own prompts (whole dataset rows, chat templates) and reward functions
  that see the prompt, the completion and the row's other columns.
- ``CatGrid-Text-v0``: CatGrid-v0 played in words, multi-turn, one token per step; ``MultiTurn-v0``: any
  string-level turn env factory (``env_fn=``) at the token level.
"""

from gymnasium.envs.registration import register, registry

RLHF_GYM = True
"""Marker: this ``envs`` package is rlhf-gym's. The top-level names ``envs``/``agents``/``runners`` are generic;
if ``python -c "import envs; print(envs.__file__, getattr(envs, 'RLHF_GYM', False))"`` prints ``False``, another
project's ``envs`` package shadows this one (run from outside that project or put rlhf-gym first on sys.path)."""

if "CatGrid-v0" not in registry:
    register(
        id="CatGrid-v0",
        entry_point="envs.catgrid:CatGridEnv",
        vector_entry_point="envs.catgrid_vector:CatGridVectorEnv",
        max_episode_steps=50,
    )

if "TextGen-IMDB-v0" not in registry:
    register(
        id="TextGen-IMDB-v0",
        entry_point="envs.textgen:TextGenEnv",
        vector_entry_point="envs.textgen_vector:TextGenVectorEnv",
    )

if "TextGen-v0" not in registry:
    register(
        id="TextGen-v0",
        entry_point="envs.textgen_general:TextGenGeneralEnv",
        vector_entry_point="envs.textgen_general:TextGenGeneralVectorEnv",
    )

if "CatGrid-Text-v0" not in registry:
    register(
        id="CatGrid-Text-v0",
        entry_point="envs.catgrid_text:CatGridTextEnv",
        vector_entry_point="envs.catgrid_text:CatGridTextVectorEnv",
    )

if "MultiTurn-v0" not in registry:
    register(
        id="MultiTurn-v0",
        entry_point="envs.turn_env:TurnTokenEnv",
        vector_entry_point="envs.turn_env:TurnTokenVectorEnv",
    )
