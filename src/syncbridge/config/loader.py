"""Reads `config.toml` and its mapping files into validated models, collecting every problem.

Order of precedence: environment variables `SYNCBRIDGE_<SECTION>__<KEY>` win over the file;
`${VAR}` (or `${VAR:-default}`) in any string is replaced from the environment. Nothing else in
syncbridge reads `os.environ`.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from ..errors import ConfigError, Problem
from ..redaction import register_secret, register_url_password
from .mapping import Mapping
from .models import Config

ENV_PREFIX = "SYNCBRIDGE_"
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class StreamKey:
    source: str
    stream: str

    def __str__(self) -> str:
        return f"{self.source}/{self.stream}"


@dataclass
class Settings:
    """A validated config with its mapping and rules files, ready for a run."""

    config: Config
    path: Path | None
    mappings: dict[StreamKey, Mapping] = field(default_factory=dict)
    rules: Any = None
    """The validated RulesConfig when `[rules] file` is set."""
    warnings: list[Problem] = field(default_factory=list)
    """Not wrong, but probably not meant (e.g. no mapping records consent): `validate` shows
    them and still succeeds."""


def format_loc(loc: tuple[Any, ...], prefix: str = "") -> str:
    """Turn a pydantic location into a key path like `sources[1].streams[0].cursor_field`."""
    out = prefix
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        elif str(item).startswith(("function-", "tagged-union")):
            continue
        else:
            out += f".{item}" if out else str(item)
    return out


_PATTERN_WORDS = {
    r"^[a-z][a-z0-9_]*$": "use lower-case letters, digits and '_', starting with a letter "
    "(it names things in commands and in the cache)",
}
"""Config name patterns in words: pydantic's own text quotes the regular expression."""


def _message(error: Any) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch":
        pattern = str((error.get("ctx") or {}).get("pattern", ""))
        return _PATTERN_WORDS.get(pattern, f"does not have the expected form ({pattern})")
    msg = str(error.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def problems_from(error: ValidationError, file: str, prefix: str = "") -> list[Problem]:
    """One Problem per pydantic error; input values are never echoed (they may be secrets)."""
    return [Problem(file, format_loc(e["loc"], prefix), _message(e)) for e in error.errors()]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), "", "file not found")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(str(path), "", f"not valid TOML: {exc}")]) from None
    except OSError as exc:
        raise ConfigError([Problem(str(path), "", f"cannot read: {exc.strerror}")]) from None


def _env_value(raw: str) -> Any:
    """Environment values are strings; a JSON list/object is parsed so lists can be set too."""
    stripped = raw.strip()
    if stripped.startswith(("[", "{")):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return raw
    return raw


def apply_env_overrides(
    data: dict[str, Any], env: AnyMapping[str, str], problems: list[Problem]
) -> dict[str, Any]:
    """Set `SYNCBRIDGE_SECTION__KEY[__SUBKEY]` values into the parsed file (env wins).

    A list of tables is addressed by index or by the `name` of an element:
    `SYNCBRIDGE_SOURCES__CRM__STREAMS__0__PATH`.
    """
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX) :].split("__")]
        node: Any = data
        where = f"environment variable {var}"
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                target = _list_element(node, part)
                if target is None:
                    problems.append(Problem(where, ".".join(parts[:i]), f"no element {part!r}"))
                    break
                if last:
                    problems.append(Problem(where, ".".join(parts), "cannot replace a table"))
                    break
                node = target
            elif isinstance(node, dict):
                if last:
                    node[part] = _env_value(env[var])
                else:
                    node = node.setdefault(part, {})
            else:
                problems.append(Problem(where, ".".join(parts[:i]), "is not a table"))
                break
    return data


def _list_element(items: list[Any], key: str) -> Any:
    if key.isdigit() and int(key) < len(items):
        return items[int(key)]
    for item in items:
        if isinstance(item, dict) and str(item.get("name", "")).lower() == key:
            return item
    return None


def interpolate(value: Any, env: AnyMapping[str, str], path: str, problems: list[Problem]) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string of a parsed TOML tree."""
    if isinstance(value, dict):
        return {
            k: interpolate(v, env, f"{path}.{k}" if path else k, problems) for k, v in value.items()
        }
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(Problem("", path, f"environment variable {name} is not set"))
        return ""

    return _INTERPOLATION.sub(substitute, value)


def register_config_secrets(model: BaseModel) -> None:
    """Register every SecretStr value, and passwords inside database URLs, for redaction."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            register_secret(value.get_secret_value())
        elif isinstance(value, BaseModel):
            register_config_secrets(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, BaseModel):
                    register_config_secrets(item)
        elif name == "url" and isinstance(value, str):
            register_url_password(value)


def parse_config_collecting(
    data: dict[str, Any], file: str, base_dir: Path, env: AnyMapping[str, str]
) -> tuple[Config | None, list[Problem]]:
    """Validate a parsed config tree; return the problems and, despite them, the best config
    that can be built without the faulty parts, so that later checks still run."""
    problems: list[Problem] = []
    data = apply_env_overrides(data, env, problems)
    data = interpolate(data, env, "", problems)
    problems = [Problem(p.file or file, p.path, p.message) for p in problems]
    config: Config | None
    try:
        config = Config.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        problems.extend(problems_from(exc, file))
        config = _without_faulty_parts(data, base_dir, exc)
    if config is not None:
        register_config_secrets(config)
    return config, problems


def _without_faulty_parts(
    data: dict[str, Any], base_dir: Path, exc: ValidationError
) -> Config | None:
    bad_sections = {e["loc"][0] for e in exc.errors() if e["loc"]}
    bad_sources = {
        e["loc"][1] for e in exc.errors() if len(e["loc"]) > 1 and e["loc"][0] == "sources"
    }
    partial = {k: v for k, v in data.items() if k not in bad_sections}
    sources = data.get("sources")
    if isinstance(sources, list) and bad_sources:
        partial["sources"] = [s for i, s in enumerate(sources) if i not in bad_sources]
    try:
        return Config.model_validate({**partial, "base_dir": base_dir})
    except ValidationError:
        return None


def parse_config(
    data: dict[str, Any], file: str, base_dir: Path, env: AnyMapping[str, str]
) -> Config:
    """Validate a parsed config tree (after env overrides and interpolation)."""
    config, problems = parse_config_collecting(data, file, base_dir, env)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path, env: AnyMapping[str, str] | None = None) -> Config:
    """Read and validate `config.toml` (without its mappings)."""
    env = os.environ if env is None else env
    path = Path(path)
    return parse_config(read_config_toml(path), str(path), path.resolve().parent, env)


def read_config_toml(path: Path) -> dict[str, Any]:
    """`read_toml` for the main config file: a missing one points at `syncbridge init`."""
    if not path.exists():
        hint = "file not found; `syncbridge init` writes one here, with sample mappings and data"
        if path.parent != Path() and not path.parent.exists():
            hint = f"file not found (no folder {str(path.parent)!r} either)"
        raise ConfigError([Problem(str(path), "", hint)])
    return read_toml(path)


def load_mapping(path: Path) -> Mapping:
    data = read_toml(path)
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, str(path))) from None
