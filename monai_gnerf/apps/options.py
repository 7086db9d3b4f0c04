"""Command-line commands made from the jobs: options, defaults and help come from the code's one source.

:func:`command` turns a job ``job(inputs..., out, config, device, ...)`` into a python-fire
command whose signature holds the job's own arguments followed by every leaf field of its config
dataclass as a ``--flag`` (nested configs flattened), with the field's default, and whose help
joins the job's docstring with the config classes' field descriptions. Nothing is typed twice:
changing a default or a help text in the dataclass changes the CLI, the bundle and Slicer.

Values are checked before any work starts (:func:`monai_gnerf.config.config_from_dict`): a wrong
type or choice, or an option the command does not have, is one line naming it.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Sequence
from typing import Any

from monai_gnerf.config import ConfigLeaf, as_flag, config_from_dict, config_leaves, field_docs, nest, path_text
from monai_gnerf.errors import GnerfInputError

__all__ = ["command", "check_option_names"]

Report = Callable[[Any, dict[str, Any]], None]


def _config_class(job: Callable[..., Any]) -> type:
    hint = typing.get_type_hints(job)["config"]
    return next(a for a in typing.get_args(hint) if a is not type(None))


def _summary(docstring: str) -> str:
    lines = inspect.cleandoc(docstring).splitlines()
    end = next((i for i, line in enumerate(lines) if line.strip() in ("Args:", "Returns:", "Raises:")), len(lines))
    return "\n".join(lines[:end]).rstrip()


def _help(job: Callable[..., Any], own: Sequence[inspect.Parameter], leaves: Sequence[ConfigLeaf]) -> str:
    job_docs = field_docs(inspect.getdoc(job) or "")
    entries = [(p.name, job_docs.get(p.name, "")) for p in own] + [(leaf.name, leaf.doc) for leaf in leaves]
    args = "\n".join(f"    {name}: {text}" for name, text in entries)
    return f"{_summary(inspect.getdoc(job) or '')}\n\nArgs:\n{args}\n"


class _Required:
    """The default fire sees for a required argument, so that a missing one is our one-line error
    rather than fire's usage text."""

    def __repr__(self) -> str:
        return "(required)"


_REQUIRED = _Required()


def _own_value(name: str, value: Any, hint: Any) -> Any:
    """A job argument as its annotation wants it.

    fire reads ``--out 5`` as the number 5: an integer given for a path (an annotation admitting
    ``str``) is turned back into its text; a float is refused, as its text is lost (``1e3`` became
    ``1000.0``). A flag (``bool``) is read with :func:`~monai_gnerf.config.as_flag`.
    """
    admitted = set(typing.get_args(hint)) or {hint}
    if bool in admitted:
        return as_flag(f"--{name}", value)
    return path_text(name, value) if str in admitted else value


PYTHON_ONLY = ("components",)
"""Job arguments that take Python objects (swapped components, as the bundle passes), never options."""


def command(job: Callable[..., Any], report: Report) -> Callable[..., None]:
    """A fire command running ``job`` with its config built from flat options.

    Args:
        job: a function with a ``config`` parameter typed ``SomeConfig | None``.
        report: prints the outcome: ``report(result, arguments)``.
    """
    config_cls = _config_class(job)
    leaves = config_leaves(config_cls)
    own = [p for p in inspect.signature(job).parameters.values() if p.name not in ("config", *PYTHON_ONLY)]
    clash = {p.name for p in own} & {leaf.name for leaf in leaves}
    if clash:
        raise ValueError(f"{job.__name__}: arguments {sorted(clash)} are also config fields.")
    parameters = [p.replace(annotation=inspect.Parameter.empty,
                            default=_REQUIRED if p.default is inspect.Parameter.empty else p.default)
                  for p in own] + [  # fmt: skip
        inspect.Parameter(leaf.name, inspect.Parameter.KEYWORD_ONLY, default=leaf.default) for leaf in leaves
    ]
    signature = inspect.Signature(parameters)
    leaf_names = {leaf.name for leaf in leaves}
    hints = typing.get_type_hints(job)

    def run(*args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as err:
            raise GnerfInputError(f"{job.__name__.replace('_', '-')}: {err}.") from None
        bound.apply_defaults()
        arguments = bound.arguments
        missing = [name.upper() for name, value in arguments.items() if value is _REQUIRED]
        if missing:
            raise GnerfInputError(f"missing {', '.join(missing)}: give it first, before the options (see --help).")
        options = {k: v for k, v in arguments.items() if k in leaf_names}
        config = config_from_dict(config_cls, nest(leaves, options))
        own_values = {k: _own_value(k, v, hints.get(k)) for k, v in arguments.items() if k not in leaf_names}
        report(job(**own_values, config=config), {**own_values, **options})

    run.__signature__ = signature  # type: ignore[attr-defined]
    run.__doc__ = _help(job, own, leaves)
    run.__name__ = job.__name__
    return run


def check_option_names(command_fn: Callable[..., Any], argv: Sequence[str]) -> None:
    """Refuse ``--flags`` that ``command_fn`` does not take, before anything runs, and one-letter
    ``-x`` forms that name no option or several (fire would print its usage text).

    Raises:
        GnerfInputError: naming the unknown or ambiguous option and the known ones.
    """
    names = [n for n in inspect.signature(command_fn).parameters if n != "self"]
    known = {*names, "help", "h"}
    for token in argv:
        if token == "--":
            return
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("-", "_")
            if name not in known:
                options = ", ".join(f"--{n}" for n in names)
                raise GnerfInputError(f"unknown option --{name}; this command takes {options or 'no options'}.")
        elif _SHORT_OPTION.fullmatch(token.split("=", 1)[0]) and token[1] != "h":
            _check_short_option(token[1], names)


_SHORT_OPTION = re.compile(r"-[A-Za-z]")  # fire's one-letter form of an option; "-1" is a value


def _check_short_option(letter: str, names: Sequence[str]) -> None:
    matches = [f"--{n}" for n in names if n.startswith(letter)]
    if len(matches) != 1:
        meaning = f"could be {' or '.join(matches)}" if matches else "names no option of this command"
        raise GnerfInputError(f"-{letter} {meaning}; write the option in full.")
