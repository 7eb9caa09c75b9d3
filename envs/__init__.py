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

# id, entry point, vector entry point (native vectorization for gym.make_vec), time limit
_ENVS = [
    ("CatGrid-v0", "envs.catgrid:CatGridEnv", "envs.catgrid_vector:CatGridVectorEnv", 50),
    ("TextGen-IMDB-v0", "envs.textgen:TextGenEnv", "envs.textgen_vector:TextGenVectorEnv", None),
    ("TextGen-v0", "envs.textgen_general:TextGenGeneralEnv", "envs.textgen_general:TextGenGeneralVectorEnv", None),
    ("CatGrid-Text-v0", "envs.catgrid_text:CatGridTextEnv", "envs.catgrid_text:CatGridTextVectorEnv", None),
    ("MultiTurn-v0", "envs.turn_env:TurnTokenEnv", "envs.turn_env:TurnTokenVectorEnv", None),
]
for _id, _entry, _vector_entry, _max_steps in _ENVS:
    if _id not in registry:
        register(id=_id, entry_point=_entry, vector_entry_point=_vector_entry, max_episode_steps=_max_steps)
