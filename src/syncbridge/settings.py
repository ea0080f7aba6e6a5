"""Loads a whole setup: config, connectors' options, mapping files, and checks them together.

Every problem is collected before anything is raised, so `syncbridge validate` lists them all.
`check_connections` (`validate --connect`) goes one step further: it signs in to each source.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping as AnyMapping
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from .config.loader import (
    Settings,
    StreamKey,
    load_mapping,
    parse_config_collecting,
    problems_from,
    read_config_toml,
    read_toml,
)
from .config.mapping import Mapping
from .config.models import Config, SourceConfig
from .connectors import Connector, build_connector, connector_class
from .errors import ConfigError, FatalError, Problem, SyncbridgeError
from .intake.setup import intake_problems
from .references import catalog, check_config, check_references, did_you_mean
from .rules.config import RulesConfig
from .transform import case_clashes


def load_settings(path: str | Path, env: AnyMapping[str, str] | None = None) -> Settings:
    """Load and cross-check `config.toml` and its mappings; raise ConfigError listing all faults."""
    path = Path(path)
    data = read_config_toml(path)
    env = os.environ if env is None else env
    config, problems = parse_config_collecting(data, str(path), path.resolve().parent, env)
    if config is None:
        raise ConfigError(problems)
    try:
        settings = check_settings(config, path)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return settings


def check_settings(config: Config, path: Path | None) -> Settings:
    file = str(path) if path else "config"
    problems: list[Problem] = []
    settings = Settings(config=config, path=path)
    names = [s.name for s in config.sources]
    for i, source in enumerate(config.sources):
        if names.count(source.name) > 1:
            problems.append(
                Problem(file, f"sources[{i}].name", f"duplicate source {source.name!r}")
            )
        _check_source(i, source, config, file, settings, problems)
    rules_file = config.resolve(config.rules.file) if config.rules.file else None
    if rules_file is not None:
        settings.rules = _load_rules(rules_file, problems)
    known_segments = {s.name for s in settings.rules.segments} if settings.rules else set()
    for k, audience in enumerate(config.mailchimp.audiences):
        if audience.segment is not None and audience.segment not in known_segments:
            where = f"mailchimp.audiences[{k}].segment"
            hint = did_you_mean(audience.segment, known_segments)
            problems.append(Problem(file, where, f"unknown segment {audience.segment!r}{hint}"))
    for j, name in enumerate(config.identity.source_priority):
        if name not in names:
            where = f"identity.source_priority[{j}]"
            problems.append(
                Problem(file, where, f"unknown source {name!r}{did_you_mean(name, names)}")
            )
    problems.extend(check_config(config, file))
    problems.extend(Problem(file, where, why) for where, why in intake_problems(config))
    streams = sum(len(source.streams) for source in config.sources)
    if len(settings.mappings) == streams and (rules_file is None or settings.rules is not None):
        # Only a complete picture can say a name is unknown: a mapping or rules file that did
        # not load has already been reported.
        cat = catalog(settings.mappings.values(), settings.rules)
        errors, settings.warnings = check_references(
            config, file, cat, settings.rules, str(rules_file)
        )
        problems.extend(errors)
    if problems:
        raise ConfigError(problems)
    return settings


def _load_rules(path: Path, problems: list[Problem]) -> RulesConfig | None:
    try:
        data = read_toml(path)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None
    try:
        return RulesConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(problems_from(exc, str(path)))
        return None


def _check_source(
    i: int,
    source: SourceConfig,
    config: Config,
    file: str,
    settings: Settings,
    problems: list[Problem],
) -> None:
    prefix = f"sources[{i}]"
    try:
        cls = connector_class(source.connector)
    except FatalError as exc:
        problems.append(Problem(file, f"{prefix}.connector", str(exc)))
        return
    ok = True
    try:
        cls.source_options.model_validate(source.options())
    except ValidationError as exc:
        problems.extend(problems_from(exc, file, prefix))
        ok = False
    for j, stream in enumerate(source.streams):
        try:
            cls.stream_options.model_validate(stream.model_dump())
        except ValidationError as exc:
            problems.extend(problems_from(exc, file, f"{prefix}.streams[{j}]"))
            ok = False
    mappings: dict[int, Mapping] = {}
    for j, stream in enumerate(source.streams):
        mapping_path = config.resolve(stream.mapping)
        try:
            mappings[j] = load_mapping(mapping_path)
            settings.mappings[StreamKey(source.name, stream.name)] = mappings[j]
        except ConfigError as exc:
            problems.extend(exc.problems)
    if ok:
        connector = build_connector(source, config.base_dir)
        _check_columns(prefix, connector, mappings, file, problems)


def check_connections(settings: Settings) -> dict[str, SyncbridgeError | None]:
    """Each source's `Connector.check` (a sign-in and one read-only call; nothing for file
    sources), by source name: None when it passed, else the error."""
    results: dict[str, SyncbridgeError | None] = {}
    for source in settings.config.sources:
        try:
            build_connector(source, settings.config.base_dir).check()
            results[source.name] = None
        except SyncbridgeError as exc:
            results[source.name] = exc
    return results


def _check_columns(
    prefix: str,
    connector: Connector,
    mappings: dict[int, Mapping],
    file: str,
    problems: list[Problem],
) -> None:
    """Check primary keys, cursors and mapped fields against the columns the stream reports."""
    try:
        streams = connector.streams()
    except SyncbridgeError as exc:
        problems.append(Problem(file, prefix, str(exc)))
        return
    for j, stream in enumerate(streams):
        where = f"{prefix}.streams[{j}]"
        try:
            columns = stream.columns()
        except SyncbridgeError as exc:
            problems.append(Problem(file, where, str(exc)))
            continue
        if columns is None:
            continue
        known = set(columns)

        def missing(name: str, known: set[str] = known) -> bool:
            return name not in known and name.split(".", 1)[0] not in known

        for key in stream.key_columns:
            if missing(key):
                problems.append(
                    Problem(
                        file, f"{where}.primary_key", f"unknown column {key!r}{_hint(columns, key)}"
                    )
                )
        if stream.cursor_field and missing(stream.cursor_field):
            msg = f"unknown column {stream.cursor_field!r}{_hint(columns, stream.cursor_field)}"
            problems.append(Problem(file, f"{where}.cursor_field", msg))
        mapping = mappings.get(j)
        if mapping is None:
            continue
        mapping_file = str(connector.base_dir / connector.stream_configs[j].mapping)
        ignore_case = mapping.columns == "ignore-case"
        if ignore_case:
            for first, second in case_clashes(list(columns)):
                msg = (
                    f"stream {stream.name!r} has columns {first!r} and {second!r}, which differ "
                    'only by case: columns = "ignore-case" cannot tell them apart'
                )
                problems.append(Problem(mapping_file, "columns", msg))
        folded = {c.casefold() for c in columns}
        for key_path, column in mapping.field_references():
            if missing(column) if not ignore_case else _missing_folded(column, folded):
                msg = f"unknown column {column!r} in stream {stream.name!r}{_hint(columns, column)}"
                if not ignore_case and column.casefold() in folded:
                    msg += '; or set columns = "ignore-case" in the mapping to match it as it is'
                problems.append(Problem(mapping_file, key_path, msg))


def _missing_folded(name: str, folded: set[str]) -> bool:
    """`missing` for `columns = "ignore-case"`: the column, or a JSON path's first segment."""
    return name.casefold() not in folded and name.split(".", 1)[0].casefold() not in folded


def _hint(columns: Sequence[str], name: str, shown: int = 20) -> str:
    """A 'did you mean' for near misses, and the columns the stream does have."""
    by_fold = {c.casefold(): c for c in reversed(columns)}  # case aside: `EMAIL` for `Email`
    close = difflib.get_close_matches(name.casefold(), list(by_fold), n=1, cutoff=0.6)
    guess = f"; did you mean {by_fold[close[0]]!r}?" if close else ""
    listed = ", ".join(repr(c) for c in columns[:shown])
    more = f", … {len(columns) - shown} more" if len(columns) > shown else ""
    return f"{guess} (columns: {listed}{more})"


__all__ = ["Settings", "StreamKey", "check_settings", "load_settings"]
