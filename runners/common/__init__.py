"""The library the runners share: run spec and loop, run directories, checkpoints and resume, evaluation,
logging, distributed plumbing, CLI helpers and the tiny-LM helpers. Never imported by ``agents`` or ``envs``."""
