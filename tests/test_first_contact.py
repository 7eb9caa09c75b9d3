"""First contact: package marker, dependency bounds, optional extras with clear errors."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


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


def test_track_without_wandb_is_a_clear_error(monkeypatch, tmp_path):
    from runners import train

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"rlhf-gym\[track\]"):
        train.main(["--track", "--log-dir", str(tmp_path), "--no-progress", "--total-timesteps", "64"])
