"""Typed job configurations: the dataclasses of a job generate its command line and its Prefect form.

A job's options are the fields of one or more dataclasses (labeling: the run options plus
`LabelConfig`), flattened under their public names. From them `JobConfig` builds the argparse
options, a pydantic model (the typed form Prefect shows) with the same names, defaults, bounds
and descriptions, and, from parsed arguments or form values, the dataclasses again. So the
command line, the form and the pipeline cannot drift apart: a field added to a dataclass
appears in both.

Each field describes itself in its `metadata`:

    help      (required) one line for --help and the form
    ge, gt, le, lt
              numeric bounds, checked by the command line, the form and `JobConfig.build`
    name      public name (form field, CLI --name) when it differs from the attribute
    flag      CLI spelling when it differs from --name (e.g. "--store" for the list "stores")
    aliases   further CLI spellings kept working, e.g. ("--out",)
    repeat    list fields: the flag repeats (--store A --store B) instead of taking several values
    none      the CLI word for None of an optional field (default "none")
    choices   allowed values of a `str` field (a `Literal` type says the same)

Types: bool, int, float, str, `Literal`, lists of these, each optionally `| None`. A field whose
type is a dataclass (quality gates) is set by NAME=VALUE overrides of its scalar fields: a
repeated CLI flag, a mapping in the form. Two integer fields can share one CLI option written
AxB (`Pair`, e.g. --size HxW).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass
from typing import Any, Literal, Union

import pydantic

__all__ = ["JobConfig", "Option", "Pair"]

METADATA_KEYS = frozenset({"help", "ge", "gt", "le", "lt", "choices", "name", "flag", "aliases", "repeat", "none"})
_BOUND_TEXT = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_SCALARS = (bool, int, float, str)


@dataclass(frozen=True)
class Pair:
    """Two integer options written as one CLI value `AxB`, e.g. Pair("--size", ("height", "width"), "...")."""

    flag: str
    names: tuple[str, str]
    help: str


@dataclass(frozen=True)
class Option:
    """One field of a job's dataclasses, with everything the CLI and the form need."""

    owner: type
    attr: str
    name: str
    annotation: Any
    default: Any  # MISSING: required
    default_factory: Any
    help: str
    bounds: dict[str, float]
    flags: tuple[str, ...]
    repeat: bool
    none_word: str
    declared_choices: tuple | None = None

    @property
    def required(self) -> bool:
        return self.default is MISSING and self.default_factory is MISSING

    def default_value(self) -> Any:
        if self.default_factory is not MISSING:
            return self.default_factory()
        return self.default

    @property
    def base(self) -> Any:
        """The annotation without `| None`."""
        return _strip_none(self.annotation)

    @property
    def optional(self) -> bool:
        return _strip_none(self.annotation) is not self.annotation

    @property
    def choices(self) -> tuple | None:
        """Allowed values: metadata `choices` or the `Literal` type's."""
        return self.declared_choices or _choices(self.base)

    @property
    def nested(self) -> type | None:
        """The dataclass this option overrides fields of, if it is one."""
        return self.base if dataclasses.is_dataclass(self.base) else None

    def check(self, value: Any) -> Any:
        """`value`, or ValueError naming the option and the bound it breaks (each item of a list)."""
        if isinstance(value, (list, tuple)):
            return type(value)(self.check(item) for item in value)
        if self.choices and value is not None and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        for key, bound in self.bounds.items():
            ok = {"ge": value >= bound, "gt": value > bound, "le": value <= bound, "lt": value < bound}[key]
            if not ok:
                raise ValueError(f"{self.name} must be {_BOUND_TEXT[key]} {_number(bound)}, got {_number(value)}")
        return value


class JobConfig:
    """The options of one job, from the fields of `parts` (dataclasses), flattened by public name.

    Args:
        parts: dataclasses whose fields are the job's options; `build` returns one instance of each.
        pairs: integer options shown on the command line as one `AxB` value.
    Raises:
        TypeError: a field without help, with an unknown metadata key, or two fields with one name.
    """

    def __init__(self, *parts: type, pairs: Sequence[Pair] = ()) -> None:
        self.parts = parts
        self.options: list[Option] = [option for part in parts for option in _options(part)]
        self.by_name = {option.name: option for option in self.options}
        if len(self.by_name) != len(self.options):
            names = [option.name for option in self.options]
            raise TypeError(f"options named twice: {sorted({n for n in names if names.count(n) > 1})}")
        self.pairs = tuple(pairs)
        for pair in self.pairs:
            for name in pair.names:
                if name not in self.by_name or _strip_none(self.by_name[name].annotation) is not int:
                    raise TypeError(f"pair {pair.flag}: {name!r} is not an integer option")

    # ------------------------------------------------------------------ command line
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add every option to `parser` (dest = public name; absent options stay absent)."""
        paired = {name: pair for pair in self.pairs for name in pair.names}
        added: set[str] = set()
        for option in self.options:
            pair = paired.get(option.name)
            if pair is None:
                _add_option(parser, option)
            elif pair.flag not in added:
                added.add(pair.flag)
                first, second = (self.by_name[n] for n in pair.names)
                default = "" if first.required else f" (default {first.default}x{second.default})"
                parser.add_argument(pair.flag, dest=pair.flag.lstrip("-").replace("-", "_"), type=_pair_type(first, second),
                                    default=argparse.SUPPRESS, metavar="x".join(n[0].upper() for n in pair.names),
                                    help=pair.help + default)

    def from_args(self, args: argparse.Namespace) -> dict[str, Any]:
        """The values the command line set, by public name (pairs split into their two options)."""
        values = dict(vars(args))
        for pair in self.pairs:
            key = pair.flag.lstrip("-").replace("-", "_")
            if key in values:
                values.update(zip(pair.names, values.pop(key)))
        values = {name: value for name, value in values.items() if name in self.by_name}
        for name, value in values.items():
            if self.by_name[name].nested is not None:
                values[name] = dict(value)
        return values

    def to_argv(self, values: Mapping[str, Any]) -> list[str]:
        """The command line that sets `values` (by public name)."""
        argv: list[str] = []
        paired = {pair.names[0]: pair for pair in self.pairs}
        second_of_pair = {pair.names[1] for pair in self.pairs}
        for name, value in values.items():
            option = self.by_name[name]
            flag = option.flags[0]
            if name in second_of_pair:
                continue
            if value is None:  # the default, or the none word where the default is something else
                argv += [] if option.default_value() is None else [flag, option.none_word]
                continue
            if name in paired:
                second = values.get(paired[name].names[1], self.by_name[paired[name].names[1]].default_value())
                argv += [paired[name].flag, f"{value}x{second}"]
                continue
            if option.base is bool:
                argv.append(flag if value else "--no-" + flag[2:])
            elif option.nested is not None:
                for key, item in value.items():
                    argv += [flag, f"{key}={option.none_word if item is None else item}"]
            elif isinstance(value, (list, tuple)):
                argv += [x for item in value for x in (flag, str(item))] if option.repeat else [flag, *map(str, value)]
            else:
                argv += [flag, str(value)]
        return argv

    # ------------------------------------------------------------------ form
    def form_model(self, name: str, doc: str, module: str) -> type[pydantic.BaseModel]:
        """A pydantic model with one field per option: the typed form Prefect shows."""
        fields = {option.name: (_form_annotation(option), _form_field(option)) for option in self.options}
        return pydantic.create_model(name, __doc__=doc, __module__=module,
                                     __config__=pydantic.ConfigDict(extra="forbid"), **fields)

    # ------------------------------------------------------------------ back to the dataclasses
    def build(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """One instance of each part from `values` by public name (missing ones take their defaults).

        Raises:
            ValueError: an unknown name, a missing required option, a value out of bounds, an
                unknown override, or what the dataclasses' own checks raise.
        """
        unknown = sorted(set(values) - set(self.by_name))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}")
        instances = []
        for part in self.parts:
            kwargs = {}
            for option in (o for o in self.options if o.owner is part):
                if option.name not in values:
                    if option.required:
                        raise ValueError(f"{option.name} is required")
                    continue
                value = option.check(values[option.name])
                if option.nested is not None and isinstance(value, Mapping):
                    value = _override(option, value)
                kwargs[option.attr] = list(value) if isinstance(value, tuple) else value
            instances.append(part(**kwargs))
        return tuple(instances)

    def values(self, *instances: Any) -> dict[str, Any]:
        """Public name -> value of `instances` (one per part): the inverse of `build`."""
        out = {}
        for instance in instances:
            for option in (o for o in self.options if o.owner is type(instance)):
                value = getattr(instance, option.attr)
                if option.nested is not None:
                    default = option.default_value()
                    value = {k: v for k, v in dataclasses.asdict(value).items()
                             if k in _overridable(option.nested) and getattr(default, k) != v}
                out[option.name] = value
        return out


# ====================================================================== fields -> options
def _options(part: type) -> list[Option]:
    if not dataclasses.is_dataclass(part):
        raise TypeError(f"{part!r} is not a dataclass")
    hints = typing.get_type_hints(part)
    options = []
    for f in dataclasses.fields(part):
        meta = dict(f.metadata)
        unknown = sorted(set(meta) - METADATA_KEYS)
        if unknown:
            raise TypeError(f"{part.__name__}.{f.name}: unknown metadata {unknown}; known: {sorted(METADATA_KEYS)}")
        if not str(meta.get("help", "")).strip():
            raise TypeError(f"{part.__name__}.{f.name} has no help text (metadata={{'help': ...}})")
        _check_type(part, f.name, hints[f.name])
        name = meta.get("name", f.name)
        flag = meta.get("flag", "--" + name.replace("_", "-"))
        options.append(Option(
            owner=part, attr=f.name, name=name, annotation=hints[f.name], default=f.default,
            default_factory=f.default_factory, help=meta["help"],
            bounds={k: meta[k] for k in ("ge", "gt", "le", "lt") if k in meta},
            flags=(flag, *meta.get("aliases", ())), repeat=bool(meta.get("repeat", False)),
            none_word=meta.get("none", "none"),
            declared_choices=tuple(meta["choices"]) if "choices" in meta else None,
        ))
    return options


def _check_type(part: type, attr: str, annotation: Any) -> None:
    base = _strip_none(annotation)
    if typing.get_origin(base) is list:
        base = _strip_none(typing.get_args(base)[0])
    if not (base in _SCALARS or _choices(base) or dataclasses.is_dataclass(base)):
        raise TypeError(f"{part.__name__}.{attr}: type {annotation} has no command-line or form spelling; "
                        "use bool, int, float, str, Literal, a list of these, or a dataclass")


def _strip_none(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) < len(typing.get_args(annotation)):
            return args[0] if len(args) == 1 else Union[tuple(args)]
    return annotation


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _overridable(nested: type) -> dict[str, Any]:
    """Scalar fields of a nested dataclass (the ones NAME=VALUE can set) -> their types."""
    hints = typing.get_type_hints(nested)
    return {f.name: hints[f.name] for f in dataclasses.fields(nested) if _strip_none(hints[f.name]) in _SCALARS}


def _any_optional(nested: type) -> bool:
    return any(_strip_none(t) is not t for t in _overridable(nested).values())


def _parse_bool(text: str) -> bool:
    """"true"/"false" (also yes/no, 1/0, on/off): bool("false") would be True."""
    word = text.strip().lower()
    if word in ("true", "yes", "1", "on"):
        return True
    if word in ("false", "no", "0", "off"):
        return False
    raise ValueError(text)


def _override(option: Option, overrides: Mapping[str, Any]) -> Any:
    known = _overridable(option.nested)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"unknown {option.name} {unknown}; known: {sorted(known)}")
    return dataclasses.replace(option.default_value(), **overrides)


# ====================================================================== argparse
def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    kwargs: dict[str, Any] = {"dest": option.name, "default": argparse.SUPPRESS}
    base = option.base
    help_text = option.help
    if option.required:
        kwargs["required"] = True
    elif option.nested is None and base is not bool and option.default_value() not in (None, [], ()):
        help_text += f" (default {_shown(option.default_value())})"
    if base is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
        flag = option.flags[0]
        help_text = option.help + f" (default {flag if option.default_value() else '--no-' + flag[2:]})"
    elif option.nested is not None:
        kwargs.update(action="append", type=_override_type(option), metavar="NAME=VALUE")
        removes = f"; VALUE {option.none_word!r} removes one" if _any_optional(option.nested) else ""
        help_text += f"; repeatable{removes} ({_override_defaults(option)})"
    elif typing.get_origin(base) in (list, tuple):
        item = _strip_none(typing.get_args(base)[0])
        kwargs.update(type=_scalar_type(option, item, _choices(item)), metavar=option.name.rstrip("s").upper())
        if option.repeat:
            kwargs["action"] = "append"
            help_text += "; repeatable"
        else:
            kwargs["nargs"] = "+"
    else:
        kwargs["type"] = _scalar_type(option, base, option.choices)
        if option.choices:
            kwargs["metavar"] = "{" + ",".join(map(str, option.choices)) + "}"
        elif option.optional and option.default_value() is not None:  # the none word turns it off
            kwargs["metavar"] = f"{option.name.upper()}|{option.none_word}"
    parser.add_argument(*option.flags, help=help_text.replace("%", "%%"), **kwargs)


def _override_defaults(option: Option) -> str:
    default = option.default_value()
    return "defaults: " + ", ".join(f"{k}={_shown(getattr(default, k))}" for k in _overridable(option.nested))


def _shown(value: Any) -> str:
    return "none" if value is None else str(value)


def _choices(annotation: Any) -> tuple | None:
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else None


def _scalar_type(option: Option, annotation: Any, choices: tuple | None):
    """str -> value of `annotation` (one of `choices`, int, float, str; the none word when optional),
    bounds checked; failures are ArgumentTypeError, which argparse prints as one line."""
    convert = type(choices[0]) if choices else annotation

    def parse(text: str) -> Any:
        if option.optional and text.strip().lower() == option.none_word:
            return None
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {convert.__name__}, got {text!r}") from None
        if choices and value not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(map(str, choices))}")
        try:
            return option.check(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = option.name  # argparse names the type in some messages
    return parse


def _override_type(option: Option):
    known = _overridable(option.nested)

    def parse(text: str) -> tuple[str, Any]:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
        if name not in known:
            raise argparse.ArgumentTypeError(f"unknown {option.flags[0].lstrip('-')} {name!r}; "
                                             f"known: {', '.join(sorted(known))}")
        base = _strip_none(known[name])
        optional = base is not known[name]
        if value.strip().lower() == option.none_word and optional:
            return name, None
        try:
            return name, _parse_bool(value) if base is bool else base(value)
        except ValueError:
            alternative = f" or {option.none_word!r}" if optional else ""
            raise argparse.ArgumentTypeError(f"{name}: expected {base.__name__}{alternative}, got {value!r}") from None

    return parse


def _pair_type(first: Option, second: Option):
    def parse(text: str) -> tuple[int, int]:
        parts = text.lower().split("x")
        try:
            values = tuple(int(p) for p in parts)
        except ValueError:
            values = ()
        if len(values) != 2:
            raise argparse.ArgumentTypeError(f"expected {first.name.upper()}x{second.name.upper()} such as 240x360, "
                                             f"got {text!r}")
        try:
            return first.check(values[0]), second.check(values[1])
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{text}: {e}") from None

    return parse


# ====================================================================== pydantic
def _form_annotation(option: Option) -> Any:
    if typing.get_origin(option.base) is list and option.bounds:  # bounds apply to the items
        item = typing.Annotated[typing.get_args(option.base)[0], pydantic.Field(**option.bounds)]
        return list[item] | None if option.optional else list[item]
    if option.declared_choices:
        choices = Literal[option.declared_choices]
        return choices | None if option.optional else choices
    if option.nested is None:
        return option.annotation
    value_types = set(_overridable(option.nested).values())
    value = value_types.pop() if len(value_types) == 1 else Any
    return dict[str, value]


def _form_field(option: Option) -> Any:
    bounds = {} if typing.get_origin(option.base) is list else option.bounds
    kwargs: dict[str, Any] = {"description": option.help, **bounds}
    if option.nested is not None:
        removes = ", null removes one" if _any_optional(option.nested) else ""
        kwargs["description"] += f"; a mapping of NAME to VALUE{removes} ({_override_defaults(option)})"
        return pydantic.Field(default_factory=dict, **kwargs)
    if option.default_factory is not MISSING:
        return pydantic.Field(default_factory=option.default_factory, **kwargs)
    return pydantic.Field(... if option.required else option.default, **kwargs)
