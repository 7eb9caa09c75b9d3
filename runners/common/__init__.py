"""The library the runners share: the run spec and loop, run directories, checkpoints and resume, evaluation,
logging, distributed plumbing, CLI helpers, and for the RLHF stages the supervised-training mechanics, crash-safe
model directories, preference pairs and the tiny-LM helpers. Never imported by ``agents`` or ``envs``; never
imports an entry point (``runners.train``, ``runners.sft``, ...)."""
