"""Every command in README.md, docs/*.md and CONTRIBUTING.md parses with the current CLI, and the cheap ones run.

Expensive commands (full training budgets, the RLHF presets, multi-GPU torchrun, the benchmarks) are parsed here
with placeholders filled in, never run; CatGrid commands and the Python snippets run for real (train with a small
budget appended). The files, links, anchors, dotted names and ``from X import Y`` lines the pages mention must
exist. The RLHF pipeline itself runs in tests/integration/test_rlhf_pipeline.py (slow, CI).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = "runs/CatGrid-v0__ppo__0__123"
CI_TEST_COMMAND = "OMP_NUM_THREADS=1 python -m pytest -q -ra -n 2"


def doc_files() -> list[Path]:
    """The pages whose commands are tested (the CHANGELOG names old paths on purpose, so it is not one of them)."""
    return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(lang: str, files: list[Path] | None = None) -> list[str]:
    return [b for f in (files or doc_files()) for b in re.findall(rf"```{lang}\n(.*?)```", f.read_text(), flags=re.S)]


def readme_blocks(lang: str) -> list[str]:
    return blocks(lang, [ROOT / "README.md"])


def block_with(lang: str, *needles: str) -> str:
    """The one ``lang`` block of the pages that contains every needle (snippets are found by content, not place)."""
    found = [b for b in blocks(lang) if all(n in b for n in needles)]
    assert len(found) == 1, f"expected one ```{lang} block with {needles} in README/docs, found {len(found)}"
    return found[0]


def shell_commands(files: list[Path] | None = None) -> list[list[str]]:
    """The words of every command in the bash blocks (continuations joined, ``&&`` chains split, comments dropped)."""
    commands = []
    for block in blocks("bash", files):
        for line in block.replace("\\\n", " ").replace("runs/<run dir>", RUN).splitlines():
            for segment in line.split("&&"):
                if words := shlex.split(segment, comments=True):
                    commands.append(words)
    return commands


def readme_commands(files: list[Path] | None = None) -> list[tuple[str, list[str]]]:
    """(module, args) of every ``python -m runners.X`` / ``torchrun ... -m runners.X`` in the bash blocks."""
    commands = []
    for words in shell_commands(files):
        if "-m" in words and words.index("-m") + 1 < len(words) and words[words.index("-m") + 1].startswith("runners."):
            i = words.index("-m")
            commands.append((words[i + 1], words[i + 2:]))
    return commands


def script_commands() -> list[tuple[str, list[str]]]:
    """(path, args) of every ``python benchmarks/X.py ...`` / ``python tests/X.py ...`` in the bash blocks."""
    return [(w[1], w[2:]) for w in shell_commands() if w[0] == "python" and len(w) > 1 and w[1].endswith(".py")]


def fill(args: list[str], model_dir: Path) -> list[str]:
    out = []
    for a in args:
        a = a.replace("<time>", "123")
        out.append("vader" if a == "PATH|vader" else str(model_dir) if a == "PATH" else a)
    return out


def parse(module: str, args: list[str]):
    from runners import compare, evaluate, rlhf, sft, train, train_reward, verifiable

    parsers = {
        "runners.train": train.parse_args, "runners.evaluate": evaluate.parse_args,
        "runners.compare": compare.parse_args, "runners.rlhf": rlhf.parse_args,
        # the two stages parse inside main(); parse with the very function and presets they use
        "runners.sft": lambda a: sft.cli_with_presets(sft.SFTConfig, sft.PRESETS, a, module=module),
        "runners.train_reward": lambda a: train_reward.cli_with_presets(train_reward.RewardConfig,
                                                                        train_reward.PRESETS, a, module=module),
        "runners.verifiable": lambda a: verifiable.cli_with_presets(verifiable.VerifiableConfig, verifiable.PRESETS,
                                                                    a, module=module),
    }
    assert module in parsers, f"the docs document {module}: add its parser to this test"
    return parsers[module](args)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _train_run(extra: list[str] = ()) -> dict:
    from runners import train

    return train.main(["--env", "CatGrid-v0", "--algo", "ppo", "--seed", "0", "--log-dir", "runs",
                       "--run-name", Path(RUN).name, "--total-timesteps", "4096", "--eval-episodes", "16",
                       "--no-progress", "--threads", "1", *extra])


def test_every_readme_command_parses(in_tmp, tiny_lm_dir, one_thread):
    commands = readme_commands()
    modules = {m for m, _ in commands}
    assert {"runners.train", "runners.evaluate", "runners.compare", "runners.sft", "runners.train_reward",
            "runners.rlhf"} <= modules
    readme = {(m, tuple(a)) for m, a in readme_commands([ROOT / "README.md"])}
    assert ("runners.train", ("--env", "CatGrid-v0", "--algo", "ppo")) in readme  # the README's two commands
    assert any(m == "runners.train" and a[:2] == ("--env", "TextGen-IMDB-v0") for m, a in readme)
    _train_run()  # --resume and evaluate lines read a real run
    for module, args in commands:
        try:
            parse(module, fill(args, tiny_lm_dir))
        except SystemExit as e:
            pytest.fail(f"documented command `python -m {module} {' '.join(args)}` does not parse (exit {e.code})")


def test_every_documented_script_command_parses(monkeypatch):
    """``python benchmarks/X.py ...`` lines parse with the script's own tyro ``Args`` (not run); other scripts exist."""
    import tyro

    scripts = script_commands()
    assert {"benchmarks/textgen_speed.py", "benchmarks/catgrid_ppo.py", "benchmarks/pg_variance.py",
            "tests/mutations.py"} <= {s for s, _ in scripts}
    for script, args in scripts:
        path = ROOT / script
        assert path.is_file(), f"the docs run `python {script}`, which does not exist"
        if not script.startswith("benchmarks/"):
            continue
        name = f"_doc_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, mod)  # dataclass/tyro resolve annotations through sys.modules
        spec.loader.exec_module(mod)
        assert dataclasses.is_dataclass(getattr(mod, "Args", None)), f"{script}: no Args dataclass to parse with"
        try:
            tyro.cli(mod.Args, args=args)
        except SystemExit as e:
            pytest.fail(f"documented command `python {script} {' '.join(args)}` does not parse (exit {e.code})")


def test_readme_states_the_ci_test_command():
    assert CI_TEST_COMMAND in (ROOT / ".ci" / "run").read_text()
    assert any(CI_TEST_COMMAND in b for b in readme_blocks("bash")), "the README must show the command CI runs"


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _resolves(dotted: str) -> bool:
    """``pkg.module.attr`` names an importable module, or an attribute of one."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def _prose(page: Path) -> str:
    return re.sub(r"```.*?```", "", page.read_text(), flags=re.S)


def _file_exists(name: str, files: list[str]) -> bool:
    """A repository path, or a path inside a package (``lm/loading.py``, ``catgrid.py``) that some file ends with."""
    return (ROOT / name).exists() or (not name.startswith(("envs/", "agents/", "runners/", "benchmarks/", "tests/"))
                                      and any(f.endswith("/" + name) for f in files))


def _link_problems(page: Path) -> list[str]:
    """Relative Markdown links of ``page`` whose file or heading anchor does not exist."""
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            problems.append(f"link to missing {target}")
        elif anchor and dest.suffix == ".md" and anchor not in {
                _slug(h) for h in re.findall(r"^#+ (.*)$", _prose(dest), flags=re.M)}:
            problems.append(f"link to missing anchor {target}")
    return problems


def _name_problems(page: Path, files: list[str]) -> list[str]:
    """Inline-code file paths, dotted names and ``from X import Y`` of ``page`` that do not exist."""
    problems = []
    for code in re.findall(r"`([^`\n]+)`", _prose(page)):
        if re.fullmatch(r"(envs|agents|runners|benchmarks|tests)/[\w./-]*|[\w./-]+\.py", code):
            if not _file_exists(code, files):
                problems.append(f"names missing file {code}")
        elif re.fullmatch(r"(envs|agents|runners)(\.\w+)+", code) and not _resolves(code):
            problems.append(f"names {code}, which does not resolve")
        for module, names in re.findall(r"from ([\w.]+) import ([\w, ]+)", code):
            problems += [f"`from {module} import {n.strip()}` fails" for n in names.split(",")
                         if not _resolves(f"{module}.{n.strip()}")]
    return problems


def test_files_links_and_names_the_docs_mention_exist():
    import runners  # noqa: F401  (the rlhf-gym marker check; registers the envs)

    files = [p.relative_to(ROOT).as_posix() for top in ("envs", "agents", "runners", "benchmarks", "tests")
             for p in (ROOT / top).rglob("*") if "__pycache__" not in p.parts]
    problems = [f"{page.relative_to(ROOT)}: {problem}" for page in doc_files()
                for problem in _link_problems(page) + _name_problems(page, files)]
    assert problems == []


def test_every_documented_python_block_compiles():
    for snippet in blocks("python"):
        compile(snippet, "<docs snippet>", "exec")


def test_catgrid_commands_and_snippets_run_as_documented(in_tmp, capsys, one_thread):
    from runners import evaluate, train

    lines = {(m, tuple(a)) for m, a in readme_commands()}
    assert ("runners.evaluate", (RUN.replace("123", "<time>"), "--episodes", "500")) in lines
    assert ("runners.train", ("--resume", RUN.replace("123", "<time>"))) in lines
    _train_run()
    resumed = train.main(["--resume", RUN, "--total-timesteps", "8192", "--no-progress", "--reset-schedule"])
    assert resumed["global_step"] == 8192
    report = evaluate.main(evaluate.parse_args([RUN, "--episodes", "500"]))
    assert report["greedy"]["episodes"] == 500
    usage = block_with("python", "optimal_values", "make_vec")
    load = block_with("python", 'load_agent("runs/')
    scope: dict = {}
    exec(usage, scope)  # gym.make / optimal_values / make_vec of the usage page
    assert scope["V"].shape == (64,) and scope["vec"].num_envs == 1024
    scope = {"obs": np.array([0, 0])}
    exec(load.replace("<time>", "123"), scope)  # load_agent + predict
    assert isinstance(scope["action"], int) and 0 <= scope["action"] < 4


def test_readme_python_training_example_runs(in_tmp, capsys, one_thread):
    """The README's example as written, with a small budget set right after its ``cfg = ...preset(...)`` line."""
    example = block_with("python", "from runners.train import", "train(cfg)")
    assert example in readme_blocks("python") and len(example.strip().splitlines()) <= 9
    small = "cfg = dataclasses.replace(cfg, total_timesteps=4096, eval_episodes=16, progress=False, threads=1)"
    patched, n = re.subn(r"^(cfg = .*preset\(.*)$", rf"\1\n{small}", example, count=1, flags=re.M)
    assert n == 1, "the README example builds its config in one `cfg = ...preset(...)` line"
    scope: dict = {}
    exec(patched, scope)
    assert Path(scope["result"]["run_dir"]).is_dir() and scope["result"]["global_step"] == 4096
    assert np.isfinite(scope["result"]["eval"]["greedy"]["ratio_to_v_star"])
    assert isinstance(scope["action"], int) and 0 <= scope["action"] < 4


def test_offline_text_snippet_runs(in_tmp, tiny_lm_dir, imdb_dir):
    import json

    snippet = block_with("python", "text_field=")
    rows = [{"review": f"a review number {i} that is long enough", "stars": 3} for i in range(8)]
    Path("reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scope: dict = {}
    exec("import gymnasium as gym\nimport envs\n" + snippet.replace("artifacts/rlhf-tiny/sft", str(tiny_lm_dir)), scope)
    obs, _ = scope["env"].reset(seed=0)
    assert obs["attention_mask"].sum() >= 2


def test_prompts_and_rewards_snippets_run(in_tmp, tiny_lm_dir, one_thread):
    """docs/prompts_and_rewards.md: TextGen-v0 with two reward functions, a chat template, a short GRPO run."""
    page = [ROOT / "docs" / "prompts_and_rewards.md"]
    snippets = [b.replace("artifacts/rlhf-tiny/sft", str(tiny_lm_dir)) for b in blocks("python", page)]
    assert len(snippets) == 3
    scope: dict = {}
    exec(snippets[0], scope)
    env, rows = scope["env"], scope["rows"]
    assert env.unwrapped.core.prompt_max_len == max(len(env.unwrapped.tokenizer(r["question"])["input_ids"])
                                                    for r in rows)
    *_, info = env.step(int(env.unwrapped.core.eos_token_id))  # EOS at once: the episode ends and is scored
    assert info["reward/correct"] == 0.0 and info["score"] == pytest.approx(info["reward/brevity"] * 0.1)
    exec(snippets[1], scope)
    obs, _ = scope["chat_env"].reset(seed=0)
    assert scope["tok"].decode(obs["input_ids"][obs["attention_mask"].astype(bool)]).endswith("<assistant>:")
    exec(snippets[2], scope)
    assert scope["result"]["global_step"] == 160


def _exec_text_snippet(snippet: str, model_dir: Path) -> dict:
    """Run a text-env snippet with the tiny model and, to save tokenising all of IMDB, 100 of its reviews."""
    from envs.imdb import load_imdb

    scope: dict = {"_TEXTS": [r["text"] for r in load_imdb("train", limit=100, seed=0)]}
    patched = snippet.replace("artifacts/rlhf-tiny/sft", str(model_dir))
    patched = patched.replace('reward_model="vader"', 'reward_model="vader", dataset=_TEXTS')
    patched = patched.replace('"reward_model": "vader"', '"reward_model": "vader", "dataset": _TEXTS')
    assert "_TEXTS" in patched, "the snippet's env uses reward_model='vader' (the test gives it a small dataset)"
    exec(patched, scope)
    return scope


def test_readme_complete_reward_example_runs(tiny_lm_dir, imdb_dir, one_thread):
    pytest.importorskip("vaderSentiment")
    snippet = block_with("python", "LMPolicyKLReward(gym.make")
    assert snippet in readme_blocks("python")
    scope = _exec_text_snippet(snippet, tiny_lm_dir)
    info = scope["info"]
    beta = scope["env"].kl_coef
    assert scope["reward"] == pytest.approx(info.get("score", 0.0) - beta * info["kl"], abs=1e-6)
    assert info["kl"] != 0.0 or beta == 0.0  # a real log π_θ (policy loaded separately, same weights here)


def test_interop_snippets_run(tiny_lm_dir, imdb_dir, one_thread):
    """docs/interop.md: the custom loop, SB3 PPO through SB3VecEnv (smaller budget), MaskablePPO on make_vec_env,
    TorchRL's GymWrapper."""
    import multiprocessing

    pytest.importorskip("vaderSentiment")
    pytest.importorskip("sb3_contrib")
    start_method = multiprocessing.get_start_method(allow_none=True)
    pytest.importorskip("torchrl")
    multiprocessing.set_start_method(start_method, force=True)  # importing torchrl sets "spawn" process-wide
    scope = _exec_text_snippet(block_with("python", "CompleteKLReward(gym.make"), tiny_lm_dir)
    assert scope["terminated"] and np.isfinite(scope["info"]["kl"]) and "score" in scope["info"]
    sb3 = block_with("python", "SB3VecEnv(venv)")
    scope = {}
    exec(sb3.replace("total_timesteps=20_000", "total_timesteps=512"), scope)
    assert scope["action"].shape == (25,) and scope["model"].num_timesteps >= 512
    scope = _exec_text_snippet(block_with("python", "MaskablePPO("), tiny_lm_dir)
    assert scope["model"].num_timesteps == 128
    scope = {}
    exec(block_with("python", "GymWrapper("), scope)
    assert scope["rollout"].shape == (4, 100) and int(scope["rollout"]["next", "done"].sum()) >= 4


def test_multiturn_snippet_runs(tmp_path, one_thread):
    """docs/multiturn.md: CatGrid-Text-v0 from a model directory (a tiny random LM with a transcript tokenizer)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from turn_helpers import catgrid_lm

    from runners.common.pretrained import save_pretrained_atomic

    model_dir = save_pretrained_atomic(*catgrid_lm(), tmp_path / "sft")
    scope: dict = {}
    exec(block_with("python", "CatGrid-Text-v0").replace("artifacts/catgrid-text/sft", str(model_dir)), scope)
    assert scope["env"].core.texts()[0] == "at 0,0 up # down . left # right .>"
    assert scope["env"].optimal_start_return() > 90
