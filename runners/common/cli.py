"""Command-line plumbing shared by the runners: ``python -m`` usage lines, help text without Sphinx markup, and
``--preset`` defaults (:func:`cli_with_presets`).

Module and dataclass docstrings are written for Sphinx (````--env````, ``:func:`preset```); ``--help`` shows
them as plain text (``--env``, ``preset``).
"""

from __future__ import annotations

import re
import sys
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


def cli_with_presets(cls: type[T], presets: dict[str, T], argv: Sequence[str] | None = None,
                     description: str | None = None, module: str | None = None) -> T:
    """Parse a config dataclass with tyro, using ``presets[--preset]`` as the defaults.

    ``--preset tiny --max-minutes 5`` therefore means "the tiny preset, but 5 minutes", and
    ``--preset tiny --help`` shows the preset's defaults.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    name = None
    for i, arg in enumerate(args):
        if arg == "--preset" and i + 1 < len(args):
            name = args[i + 1]
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
    default = presets.get(name, cls()) if name is not None else cls()
    return tyro.cli(cls, args=args, default=default, description=plain(description),
                    prog=prog(module) if module else None)


def quiet_transformers() -> None:
    """Hide transformers' own progress bars ("Loading weights ...") inside our runners: ours show the run."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
