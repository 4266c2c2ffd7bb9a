"""Objects a spec names by import path: MONAI bundle configs, checked, then instantiated by MONAI.

A spec names a researcher's own network or transform the way MONAI bundles do
(docs/ARCHITECTURE.md 8): ``{"_target_": "pkg.module.Name", argument: value, ...}``, where a value
may be ``"@name"``, a reference to a value segstudy supplies (the study's ``spatial_dims``,
``in_channels``, ``out_channels``, a factor's level), or another such mapping.
`monai.bundle.ConfigParser` instantiates it (`instantiate`); `check_component` checks it first,
so a mistake is one line naming the spec key and what is accepted: the target imports, every
argument is one it takes, no required argument is missing, every reference names a value that
exists. MONAI's expression strings (``$...``) and macros (``%...``) are refused: a spec holds data,
and code belongs in the module the target names.

Modules are found from the current folder (the user's project folder, as `python -m` finds them;
`study.process_state.import_from_project_folder`), then the installed packages. A spec with a
``_target_`` runs the code it names: run specs you trust.

Example:
    >>> net = {"_target_": "monai.networks.nets.BasicUNet", "spatial_dims": "@spatial_dims",
    ...        "features": [4, 4, 8, 16, 32, 4]}
    >>> _ = check_component(net, where="architectures.basic", references=["spatial_dims"])
    >>> type(instantiate(net, where="architectures.basic", references={"spatial_dims": 2})).__name__
    'BasicUNet'
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from study import process_state
from study.errors import SegstudyError, first_line

TARGET = "_target_"
# MONAI's other special keys: `_desc_` is a comment; `_requires_`, `_disabled_` and `_mode_` change
# what instantiation runs, which a study spec does not need (segstudy calls the object itself).
_ALLOWED_SPECIAL = (TARGET, "_desc_")
_REFERENCE, _EXPRESSION, _MACRO = "@", "$", "%"


def is_component(value: Any) -> bool:
    """True for a mapping with a ``_target_`` key (a bundle component)."""
    return isinstance(value, Mapping) and TARGET in value


def locate(path: Any, *, where: str) -> Any:
    """The object an import path names (``pkg.module.Name``), imported from the project folder or
    the installed packages.

    Raises:
        SegstudyError: ``<where>._target_: ...`` for a path that is not dotted, a module that is
            not found or fails to import, or a name the module does not have (did-you-mean).
    """
    key = f"{where}.{TARGET}"
    if not isinstance(path, str) or "." not in path.strip(".") or any(not p.isidentifier() for p in path.split(".")):
        raise SegstudyError(
            f"{key}: {path!r} is not an import path; accepted: module.Name, e.g. my_nets.TinyUNet or "
            "monai.networks.nets.UNet"
        )
    process_state.import_from_project_folder()
    parts = path.split(".")
    module, n = None, len(parts) - 1
    while n > 0:
        name = ".".join(parts[:n])
        try:
            module = importlib.import_module(name)
            break
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):  # a module it imports is missing
                raise SegstudyError(f"{key}: importing '{name}' failed: {type(exc).__name__}: {first_line(exc)}") from None
            n -= 1
        except Exception as exc:  # noqa: BLE001 - any error raised while the user's module runs
            raise SegstudyError(f"{key}: importing '{name}' failed: {type(exc).__name__}: {first_line(exc)}") from None
    if module is None:
        raise SegstudyError(
            f"{key}: no module '{parts[0]}' found in the project folder ({process_state.project_folder()}) "
            "or the installed packages; accepted: an importable module.Name"
        )
    found: Any = module
    for i, attribute in enumerate(parts[n:], start=n):
        if not hasattr(found, attribute):
            owner = ".".join(parts[:i])
            names = sorted(a for a in dir(found) if not a.startswith("_"))
            close = difflib.get_close_matches(attribute, names, n=1)
            hint = f"; did you mean '{owner}.{close[0]}'?" if close else ""
            raise SegstudyError(f"{key}: '{owner}' has no '{attribute}'{hint}")
        found = getattr(found, attribute)
    return found


def references_in(config: Any) -> Iterator[str]:
    """The ids every ``@id`` string of a config refers to (``@id::sub`` refers to ``id``)."""
    if isinstance(config, Mapping):
        for value in config.values():
            yield from references_in(value)
    elif isinstance(config, list | tuple):
        for value in config:
            yield from references_in(value)
    elif isinstance(config, str) and config.startswith(_REFERENCE):
        yield config[1:].split("::", 1)[0].split("#", 1)[0]


def check_component(
    config: Any,
    *,
    where: str,
    references: Collection[str] = (),
    supplied: Collection[str] = (),
    keys: Mapping[str, str] | None = None,
) -> Any:
    """Check a bundle component without instantiating it; return the object its target names.

    Args:
        config: the mapping as written in the spec.
        where: the spec key of the mapping, e.g. ``architectures.tiny`` (errors name keys under it).
        references: the ids an ``@id`` value may name.
        supplied: arguments segstudy passes itself when it calls the object (e.g. ``image``): not
            required in the spec, and refused there.
        keys: the spec key of an argument set elsewhere than ``<where>.<argument>`` (a
            perturbation's per-severity arguments are merged with its shared ones).

    Raises:
        SegstudyError: one line naming the key: an unsupported special key, an expression or
            macro, a reference to nothing, an unimportable target, an argument the target does
            not take, or a required argument that is missing.
    """
    if not is_component(config):
        raise SegstudyError(f"{where}: expected a mapping with '{TARGET}: module.Name' and its arguments, got {config!r}")
    target = locate(config[TARGET], where=where)
    key_of = {k: (keys or {}).get(k, f"{where}.{k}") for k in config if isinstance(k, str)}
    for key, value in config.items():
        if not isinstance(key, str):
            raise SegstudyError(f"{where}: argument names must be text, got {key!r}")
        if key.startswith("_") and key.endswith("_") and key not in _ALLOWED_SPECIAL:
            raise SegstudyError(f"{key_of[key]}: not supported in a study spec; accepted special keys: {', '.join(_ALLOWED_SPECIAL)}")
        _check_value(value, where=key_of[key], references=references)
    arguments = [k for k in config if k not in _ALLOWED_SPECIAL]
    accepted, required = _parameters(target)
    for key in arguments:
        if key in supplied:
            raise SegstudyError(f"{key_of[key]}: segstudy passes '{key}' itself; remove it from the spec")
        if accepted is not None and key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            shown = ", ".join(sorted(a for a in accepted if a not in supplied)) or "none"
            raise SegstudyError(f"{key_of[key]}: {config[TARGET]} takes no argument '{key}'{hint} Accepted: {shown}")
    missing = [name for name in required if name not in arguments and name not in supplied]
    if missing:
        example = f"{missing[0]}: '@{missing[0]}'" if missing[0] in references else f"{missing[0]}: ..."
        raise SegstudyError(f"{where}: {config[TARGET]} needs the argument(s) {', '.join(missing)} (e.g. {example})")
    return target


def _check_value(value: Any, *, where: str, references: Collection[str]) -> None:
    """Nested components are checked in turn; strings must be plain text or a known reference."""
    if is_component(value):
        check_component(value, where=where, references=references)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_value(item, where=f"{where}.{key}", references=references)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(item, where=f"{where}[{i}]", references=references)
    elif isinstance(value, str) and value[:1] in (_EXPRESSION, _MACRO):
        raise SegstudyError(
            f"{where}: {value!r} is a MONAI {'expression' if value[0] == _EXPRESSION else 'macro'}; a study spec "
            "takes plain values and @references only (put code in the module your _target_ names)"
        )
    elif isinstance(value, str) and value.startswith(_REFERENCE):
        name = next(references_in(value))
        if name not in references:
            accepted = ", ".join(f"@{r}" for r in sorted(references)) or "none here"
            raise SegstudyError(f"{where}: {value!r} refers to nothing; accepted references: {accepted}")


def _parameters(target: Any) -> tuple[set[str] | None, list[str]]:
    """(argument names the target takes, or None when it takes any; required names).

    A class whose ``__init__`` passes ``**kwargs`` on (TorchIO's transforms) takes its bases'
    arguments too, up to the first ``__init__`` that takes no ``**kwargs``.
    """
    if inspect.isclass(target):
        accepted: set[str] = set()
        required: list[str] | None = None  # the most derived __init__'s: it is the one called
        for cls in target.__mro__:
            init = cls.__dict__.get("__init__")
            if init is None:
                continue
            if cls is object:
                break
            names, needed, open_ = _signature(init, skip_first=True)
            required = needed if required is None else required
            if names is None:
                return None, required
            accepted |= names
            if not open_:
                break
        return accepted, required or []
    if callable(target):
        names, needed, open_ = _signature(target, skip_first=False)
        return (None if names is None or open_ else names), needed
    raise SegstudyError(f"'{target!r}' is neither a class nor a function")


def _signature(fn: Callable[..., Any], *, skip_first: bool) -> tuple[set[str] | None, list[str], bool]:
    """(keyword names, required names, takes **kwargs) of a function; names None when unknown."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        return None, [], True
    if skip_first and params:
        params = params[1:]
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    open_ = any(p.kind is p.VAR_KEYWORD for p in params)
    return {p.name for p in named}, [p.name for p in named if p.default is p.empty], open_


def instantiate(
    config: Mapping[str, Any], *, where: str, references: Mapping[str, Any] | None = None, defer_functions: bool = False
) -> Any:
    """Instantiate a component with `monai.bundle.ConfigParser`, the references as its other entries.

    A class target is instantiated and a function target called with the arguments (a factory), as
    MONAI does; with `defer_functions` a function target is returned as a partial of its arguments
    instead (MONAI's ``_mode_: callable``), for segstudy to call on each image.

    Raises:
        SegstudyError: the target's constructor (or a nested one) failed; one line naming `where`
            and the first line of the error it raised.
    """
    from monai.bundle import ConfigParser

    entry = dict(config)
    if defer_functions and not inspect.isclass(locate(entry[TARGET], where=where)):
        entry["_mode_"] = "callable"
    name = "_segstudy_component"
    content = {**(references or {}), name: entry}
    try:
        return ConfigParser(content).get_parsed_content(name)
    except Exception as exc:  # noqa: BLE001 - the user's constructor may raise anything
        cause = exc.__cause__ or exc  # MONAI wraps the constructor's error in "Failed to instantiate"
        raise SegstudyError(
            f"{where}: {entry[TARGET]}(...) failed: {type(cause).__name__}: {first_line(cause, limit=300)}"
        ) from None


__all__ = ["TARGET", "check_component", "instantiate", "is_component", "locate", "references_in"]
