"""Where the intake stores events, whether its setup can work, and its parts, built."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Generic, TypeVar

from ..config.models import Config, SourceConfig
from ..errors import FatalError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from starlette.routing import BaseRoute

    from ..config.loader import Settings
    from ..ingest import StreamIngest
    from .commit import GroupCommit

CONNECTOR = "intake"
T = TypeVar("T")


def intake_source(config: Config) -> SourceConfig | None:
    """The source events are stored into: `[intake] source`, or the only intake source."""
    wanted = config.intake.source
    candidates = [s for s in config.sources if s.connector == CONNECTOR and s.enabled]
    if wanted is not None:
        return next((s for s in candidates if s.name == wanted), None)
    return candidates[0] if len(candidates) == 1 else None


def intake_problems(config: Config) -> list[tuple[str, str]]:
    """(key path, why) of an intake setup that cannot work."""
    intake = config.intake
    sources = [s for s in config.sources if s.connector == CONNECTOR and s.enabled]
    if not intake.write_keys:
        if intake.source is not None or sources:
            return [("intake.write_keys", "the intake source needs at least one write key")]
        return []
    if intake.source is not None and intake_source(config) is None:
        names = ", ".join(s.name for s in sources) or "none"
        return [("intake.source", f"no enabled source {intake.source!r} with connector = "
                 f'"intake" (intake sources: {names})')]  # fmt: skip
    if intake.source is None and len(sources) != 1:
        why = (
            'no source has connector = "intake" to store events into'
            if not sources
            else f"several intake sources ({', '.join(s.name for s in sources)}): name one"
        )
        return [("intake.source", why)]
    source = intake_source(config)
    if source is not None and len(source.streams) != 1:
        return [(f"sources.{source.name}.streams", "an intake source has exactly one stream")]
    return []


class PerSettings(Generic[T]):
    """A value built from the settings, built again when a reload brings new ones (the
    daemon's settings are replaced whole on reload)."""

    def __init__(self, settings: Callable[[], Settings], build: Callable[[Settings], T]) -> None:
        self.settings, self.build = settings, build
        self._built: tuple[Settings, T] | None = None

    def __call__(self) -> T:
        current = self.settings()
        if self._built is None or self._built[0] is not current:
            self._built = (current, self.build(current))
        return self._built[1]


def build_intake(
    settings: Callable[[], Settings], engine: Engine
) -> tuple[list[BaseRoute], GroupCommit] | None:
    """The intake's routes and its writer, or None when no write key is configured."""
    from ..pipeline import stream_jobs
    from .commit import GroupCommit
    from .routes import intake_routes

    config = settings().config
    if not config.intake.write_keys or intake_source(config) is None:
        return None

    def intake_job(current: Settings) -> StreamIngest:
        source = intake_source(current.config)
        if source is None:
            raise RuntimeError("the intake source is gone from the config")
        return next(iter(stream_jobs(current, only=source.name).values()))

    commit = GroupCommit(engine, PerSettings(settings, intake_job), config.intake.max_batch_records)
    keys = [k.get_secret_value() for k in config.intake.write_keys]
    return intake_routes(keys, commit), commit


@contextmanager
def serving(settings: Callable[[], Settings], engine: Engine) -> Iterator[str]:
    """The intake alone on an HTTP server on a free local port (the demo, the bench, tests):
    yields its base URL; on exit the server stops, then the writer stores what it accepted."""
    built = build_intake(settings, engine)
    if built is None:
        raise FatalError('the intake needs [intake] write_keys and a connector = "intake" source')
    routes, commit = built
    with serving_alone(routes, commit.close) as url:
        yield url


@contextmanager
def serving_alone(routes: list[BaseRoute], close: Callable[[], None]) -> Iterator[str]:
    """These routes alone on an HTTP server on a free local port: yields its base URL; on exit
    the server stops, then `close` (the writer stores what it accepted)."""
    from ..daemon.http import HttpServer, IdleView, build_app

    server = HttpServer(build_app(IdleView(), None, routes), "127.0.0.1:0")
    server.start()
    try:
        yield f"http://{server.address}"
    finally:
        server.stop()
        close()
