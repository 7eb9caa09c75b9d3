"""First contact without the Hugging Face hub: find every default that cannot load, fast, and say what to pass.

``TextGen-IMDB-v0`` defaults to hub resources (``lvwerra/gpt2-imdb``, ``lvwerra/distilbert-imdb``,
``stanfordnlp/imdb``). Without network, ``from_pretrained`` retries for tens of seconds and then fails on the first
of them with a long chained traceback. :func:`check_sources` runs before anything loads: it respects
``HF_HUB_OFFLINE``, otherwise makes ONE request with a short timeout, and raises a single :class:`HubUnavailableError`
listing every missing source with the offline alternatives, under the argument names the env takes.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

from envs.imdb import HUB_ID, _looks_like_path, default_imdb_dir

_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_TRUE = {"1", "ON", "YES", "TRUE"}
PROBE_TIMEOUT = 3.0  # seconds


class HubUnavailableError(OSError):
    """The Hugging Face hub is offline or unreachable and some sources are neither local nor cached."""


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (read now, so it can be set after import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


@functools.lru_cache(maxsize=4)
def _probe(endpoint: str, timeout: float) -> bool:
    from huggingface_hub.utils import get_session

    try:
        response = get_session().head(endpoint, timeout=timeout)
    except Exception:  # DNS, connection refused, timeout, proxy errors: all mean "not reachable now"
        return False
    return response.status_code < 400  # an intercepting proxy's error page is not the hub


def hub_reachable(timeout: float = PROBE_TIMEOUT) -> bool:
    """False when offline (``HF_HUB_OFFLINE``) or when one request to the hub endpoint fails within ``timeout`` s
    (through huggingface_hub's session, so proxies apply). The answer is cached per process and endpoint."""
    if hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return _probe(endpoint, float(timeout))


def _hub_model(value: Any) -> str | None:
    """The hub id a model argument refers to, or None (an object, an existing local path, 'vader')."""
    if not isinstance(value, (str, os.PathLike)):
        return None
    name = os.fspath(value)
    if name == "vader" or Path(name).expanduser().exists() or not _HUB_ID.match(name):
        return None
    return name


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def _dataset_source(dataset: Any) -> str | None:
    """The hub dataset a ``dataset=`` argument needs, or None when it is local / in memory."""
    if dataset is None:
        return None if default_imdb_dir().is_dir() else HUB_ID
    if isinstance(dataset, (str, os.PathLike)):
        name = os.fspath(dataset)
        if Path(name).expanduser().exists() or _looks_like_path(name):
            return None
        return name
    return None


HINTS = {
    "model": "the policy and reference LM: pass a local dir (e.g. `python -m runners.sft --preset tiny` writes "
             "artifacts/sft-tiny; any save_pretrained dir works) or a PreTrainedModel together with tokenizer=",
    "tokenizer": "pass a local tokenizer dir or a PreTrainedTokenizer object",
    "ref_model": "pass a local dir or a PreTrainedModel (default: a copy of model=)",
    "reward_model": "pass a local dir (e.g. `python -m runners.train_reward --preset tiny` writes artifacts/rm-tiny), "
                    "reward_model='vader' (pip install 'rlhf-gym[vader]') or any callable list[str] -> scores",
    "dataset": "pass dataset='path/to/train.jsonl.gz' (or .jsonl, or a dir holding train.jsonl.gz; one "
               "{\"text\": ...} object per line), a list of strings, or set RLHF_IMDB_DIR to a local IMDB copy",
}


def check_sources(**sources: Any) -> None:
    """Raise one :class:`HubUnavailableError` naming every source in ``sources`` (model=, reward_model=, dataset=,
    ...) that needs the hub while the hub is offline/unreachable and the source is not cached. Returns quickly when
    everything is local, in memory or cached; the hub is probed at most once, only if something needs it."""
    needed: dict[str, str] = {}
    for name, value in sources.items():
        if name == "dataset":
            hub_id = _dataset_source(value)
            if hub_id is not None:
                needed[name] = hub_id
        else:
            hub_id = _hub_model(value)
            if hub_id is not None and not _cached(hub_id):
                needed[name] = hub_id
    if not needed:
        return
    notes: dict[str, str] = {}
    if "dataset" in needed:
        try:
            import datasets  # noqa: F401  (the optional [hub] extra)
        except ImportError:
            notes["dataset"] = " (hub datasets also need the `datasets` package: pip install 'rlhf-gym[hub]')"
    if not notes and hub_reachable():
        return
    why = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face hub is not reachable"
    if notes and not hub_offline() and len(needed) == 1:
        why = "the `datasets` package is missing"
    lines = [f"TextGen-IMDB-v0 cannot load {len(needed)} default(s) ({why}); they are neither local nor cached:"]
    for name, hub_id in needed.items():
        lines.append(f"  - {name}={hub_id!r}{notes.get(name, '')}: {HINTS.get(name, 'pass a local path')}")
    lines.append("To run offline, pass the alternatives above, or run once online so that the cache serves them "
                 "later with HF_HUB_OFFLINE=1.")
    raise HubUnavailableError("\n".join(lines))
