"""Data shipped with syncbridge: the example config, default mappings and the demo exports.

In the repository they live at the top level (`mappings/`, `examples/`, `config.example.toml`);
a built wheel installs them as `syncbridge.bundled.mappings` and `syncbridge.bundled.examples`.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path


def data_dir(name: str) -> Path:
    """The folder of bundled data `name` ("mappings" or "examples")."""
    try:
        spec = find_spec(f"{__name__}.{name}")
    except ModuleNotFoundError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    # An editable install maps only top-level packages; the data is in the checkout.
    checkout = Path(__file__).resolve().parents[3] / name
    if not checkout.is_dir():
        raise FileNotFoundError(f"bundled {name!r} folder is missing from this installation")
    return checkout


def example_config() -> Path:
    return Path(__file__).with_name("config.example.toml")
