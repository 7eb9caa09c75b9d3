"""First contact: package marker, dependency bounds, optional extras with clear errors."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _requirements() -> dict[str, Requirement]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name: Requirement(r) for r in meta["dependencies"]}


def test_installed_versions_are_within_the_declared_bounds():
    reqs = _requirements()
    for name in ("torch", "transformers"):
        installed = importlib.metadata.version(name).split("+")[0]
        assert reqs[name].specifier.contains(installed, prereleases=True), (name, installed, reqs[name])
    assert any(s.operator == "<" for s in reqs["transformers"].specifier), "transformers needs a tested upper bound"
    assert "matplotlib" not in reqs, "matplotlib is the optional [plot] extra"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("matplotlib") for r in extras["plot"]) and any(r.startswith("matplotlib") for r in extras["dev"])


def test_interop_and_video_extras_are_in_dev_with_lower_bounds_only():
    """CI installs .[dev]: the optional libraries of docs/interop.md come with it, and a `>=` bound never pulls
    another torch over the one installed first."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dev = {Requirement(r).name for r in extras["dev"]}
    for extra in ("interop", "video", "multiturn"):
        for r in map(Requirement, extras[extra]):
            assert r.name in dev and {s.operator for s in r.specifier} == {">="}, (extra, str(r))
    assert {"stable-baselines3", "sb3-contrib", "torchrl"} <= {Requirement(r).name for r in extras["interop"]}
    assert "moviepy" in {Requirement(r).name for r in extras["video"]}
    assert "gem-llm" in {Requirement(r).name for r in extras["multiturn"]}


def test_shadowing_envs_package_gives_a_clear_error(tmp_path):
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "__init__.py").write_text("")  # a user's own envs package
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    out = subprocess.run([sys.executable, "-c", "import runners.train"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "not rlhf-gym's envs package" in out.stderr and str(tmp_path / "envs") in out.stderr
    ok = subprocess.run([sys.executable, "-c", "import envs; print(envs.RLHF_GYM)"], cwd=ROOT,
                        env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
    assert ok.stdout.strip() == "True"


def test_missing_matplotlib_is_a_clear_error_before_training(monkeypatch, tmp_path):
    from runners import compare

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ImportError, match=r"rlhf-gym\[plot\].*--no-plot"):
        compare.main(compare.CompareConfig(log_dir=str(tmp_path), name="c", seeds=[0], jobs=1))
    assert not (tmp_path / "c").exists()  # failed before any run started


def test_track_mirrors_tensorboard_to_wandb(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from runners import train

    calls = {}

    def init(**kwargs):
        calls.update(kwargs)
        return SimpleNamespace(finish=lambda: calls.setdefault("finished", True))

    monkeypatch.setitem(sys.modules, "wandb", SimpleNamespace(init=init))
    train.main(["--track", "--wandb-project", "p", "--log-dir", str(tmp_path), "--run-name", "w", "--no-progress",
                "--total-timesteps", "512", "--num-envs", "8", "--num-steps", "32", "--eval-episodes", "0"])
    assert calls["sync_tensorboard"] is True and calls["project"] == "p" and calls["name"] == "w"
    assert calls["config"]["env"] == "CatGrid-v0" and calls["finished"] is True


def test_track_without_wandb_is_a_clear_error(monkeypatch, tmp_path):
    from runners import train

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"rlhf-gym\[track\]"):
        train.main(["--track", "--log-dir", str(tmp_path), "--no-progress", "--total-timesteps", "4096"])


def test_offline_make_lists_every_missing_default_at_once(monkeypatch, tmp_path):
    import time

    import gymnasium as gym

    import envs  # noqa: F401
    from envs.hub import HubUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RLHF_IMDB_DIR", str(tmp_path / "no-imdb-here"))
    start = time.monotonic()
    with pytest.raises(HubUnavailableError) as err:
        gym.make("TextGen-IMDB-v0")
    assert time.monotonic() - start < 5.0
    msg = str(err.value)
    for needle in ("model='lvwerra/gpt2-imdb'", "reward_model='lvwerra/distilbert-imdb'", "dataset='stanfordnlp/imdb'",
                   "runners.sft", "runners.train_reward", "reward_model='vader'", "callable",
                   "dataset='path/to/train.jsonl.gz'", "HF_HUB_OFFLINE"):
        assert needle in msg, needle
    assert "source=" not in msg and len(msg.splitlines()) <= 6
    assert err.value.__cause__ is None and err.value.__context__ is None  # one short error, no chained traceback


def test_offline_error_names_only_what_is_missing(monkeypatch, tiny_lm_dir, imdb_dir):
    import gymnasium as gym

    from envs.hub import HubUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError) as err:
        gym.make("TextGen-IMDB-v0", model=str(tiny_lm_dir))
    msg = str(err.value)
    assert "reward_model='lvwerra/distilbert-imdb'" in msg and "- model=" not in msg and "dataset=" not in msg


def test_hub_probe_is_one_short_attempt(monkeypatch):
    from types import SimpleNamespace

    import huggingface_hub.utils
    from huggingface_hub import constants

    from envs import hub

    calls = []

    class Session:
        def head(self, url, timeout):
            calls.append((url, timeout))
            raise TimeoutError("no answer")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: Session())
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    hub._probe.cache_clear()
    assert hub.hub_reachable() is False and hub.hub_reachable() is False
    assert calls == [("https://hub.example", hub.PROBE_TIMEOUT)] and hub.PROBE_TIMEOUT <= 5  # once, short
    monkeypatch.setattr(Session, "head", lambda self, url, timeout: SimpleNamespace(status_code=404))
    hub._probe.cache_clear()
    assert hub.hub_reachable() is False  # an intercepting proxy's error page is not the hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub._probe.cache_clear()
    assert hub.hub_offline() and hub.hub_reachable() is False
    hub._probe.cache_clear()


def test_text_field_selects_the_column_and_names_the_columns_found(tmp_path, tiny_lm_dir):
    import json

    import gymnasium as gym

    from envs.imdb import load_imdb
    from envs.prompts import load_texts
    from runners import train

    rows = [{"review": f"this movie was really quite good number {i}", "stars": 5} for i in range(8)]
    assert load_texts(rows, "train", text_field="review")[0] == rows[0]["review"]
    with pytest.raises(ValueError, match=r"no 'text' field; its fields are \['review', 'stars'\].*text_field="):
        load_texts(rows, "train")

    class FakeDataset(list):  # the part of datasets.Dataset the env reads
        column_names = ["review", "stars"]

    with pytest.raises(ValueError, match=r"no 'text' column; its columns are \['review', 'stars'\]"):
        load_texts(FakeDataset(rows), "train")
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_imdb(source=path, text_field="review")[0]["text"] == rows[0]["review"]
    with pytest.raises(ValueError, match=r"\"text\".*\['review', 'stars'\].*--text-field"):
        load_imdb(source=path)
    env = gym.make("TextGen-IMDB-v0", model=str(tiny_lm_dir), reward_model=lambda t: [0.0] * len(t),
                   dataset=FakeDataset(rows), text_field="review", device="cpu")
    obs, _ = env.reset(seed=0)
    assert obs["attention_mask"].sum() >= 2
    cfg = train.parse_args(["--env", "TextGen-IMDB-v0", "--text-field", "review"])
    assert train.env_kwargs(cfg)["text_field"] == "review"
