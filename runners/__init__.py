"""Runners of rlhf-gym: training, evaluation, comparison and the RLHF stages (``python -m runners.<name>``).

The top-level package names ``envs``/``agents``/``runners`` are generic, so another project's ``envs`` package can
shadow ours; importing any runner checks for rlhf-gym's marker first and says so plainly instead of failing later
with ``NameNotFound: Environment CatGrid doesn't exist`` or ``No module named 'envs.lm'``.
"""

import envs as _envs

if not getattr(_envs, "RLHF_GYM", False):
    raise ImportError(
        f"`import envs` found {getattr(_envs, '__file__', None) or list(getattr(_envs, '__path__', []))}, which is not "
        "rlhf-gym's envs package (it has no RLHF_GYM marker). Another project's `envs` shadows it: run from outside "
        "that project, or put rlhf-gym's directory first on sys.path / PYTHONPATH."
    )
