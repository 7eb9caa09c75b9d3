"""Command-line plumbing shared by the runners: ``python -m`` usage lines and help text without Sphinx markup.

Module and dataclass docstrings are written for Sphinx (````--env````, ``:func:`preset```); ``--help`` shows
them as plain text (``--env``, ``preset``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeVar

import tyro

T = TypeVar("T")
_ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|obj|exc|ref|doc):`~?([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``")


def plain(text: str | None) -> str | None:
    """Sphinx/reST inline markup -> plain text: ``:func:`x``` -> ``x``, double backticks -> nothing."""
    if text is None:
        return None
    text = _ROLE.sub(lambda m: m.group(1).split(".")[-1] if m.group(0).count("~") else m.group(1), text)
    text = re.sub(r"::(\s*\n)", r":\1", text)  # reST literal-block marker
    return _LITERAL.sub(r"\1", text)


def prog(module: str) -> str:
    """The usage line's program: ``python -m runners.train``, not the path of the file."""
    return f"python -m {module}"


def parse(
    cls: type[T], module: str, description: str | None, args: Sequence[str] | None = None, default: Any = None,
) -> T:
    """``tyro.cli`` with a ``python -m`` usage line and a plain-text description."""
    kwargs: dict[str, Any] = {} if default is None else {"default": default}
    return tyro.cli(cls, prog=prog(module), description=plain(description), args=args, **kwargs)


def quiet_transformers() -> None:
    """Hide transformers' own progress bars ("Loading weights ...") inside our runners: ours show the run."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
