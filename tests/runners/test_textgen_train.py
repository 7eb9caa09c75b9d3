"""runners.train on TextGen-v0: your prompts and reward functions, each logged on its own, sampling controls in
the exported generation config, reward whitening and clipping options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM

from runners.train import preset, train

pytestmark = pytest.mark.usefixtures("one_thread")
ROWS = [{"prompt": f"Calculate {a} + {b}.", "answer": str(a + b)} for a in range(5) for b in range(5)]


def test_textgen_v0_logs_every_reward_function_and_exports_the_sampling(tiny_lm, tiny_tokenizer, tmp_path):
    seen: dict[str, list[float]] = {"exact": [], "length": []}

    def exact(prompts, completions, answer):
        scores = [None if a == "4" else float(c.strip() == a) for c, a in zip(completions, answer)]
        seen["exact"] += [s for s in scores if s is not None]
        return scores

    def length(texts):
        seen["length"] += [len(t) / 50 for t in texts]
        return [len(t) / 50 for t in texts]

    cfg = preset("TextGen-v0", "grpo")
    cfg = dataclasses.replace(cfg, num_envs=8, num_steps=4, total_timesteps=8 * 4, group_size=4, max_new_tokens=3,
                              agent=dataclasses.replace(cfg.agent, temperature=0.8, top_k=30, top_p=0.95),
                              log_dir=str(tmp_path), run_name="run", threads=1, progress=False)
    result = train(cfg, env_overrides={"model": tiny_lm, "tokenizer": tiny_tokenizer, "dataset": ROWS,
                                       "reward_model": [exact, length], "reward_weights": [1.0, 0.1],
                                       "device": "cpu"})
    acc = EventAccumulator(str(tmp_path / "run"))
    acc.Reload()
    for name, values in seen.items():
        (event,) = acc.Scalars(f"rewards/{name}")
        assert values and event.value == pytest.approx(np.mean(values), rel=1e-5)
    gen = AutoModelForCausalLM.from_pretrained(result["policy_dir"]).generation_config
    assert (gen.temperature, gen.top_k, gen.top_p, gen.max_new_tokens) == (0.8, 30, 0.95, 3)
