"""Data shipped with syncbridge: the example config, default mappings and the demo exports.

In the repository they live at the top level (`mappings/`, `examples/`, `config.example.toml`);
a built wheel installs them as `syncbridge.bundled.mappings` and `syncbridge.bundled.examples`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def data_dir(name: str) -> Path:
    """The folder of bundled data `name` ("mappings" or "examples")."""
    try:
        return Path(str(files(f"{__name__}.{name}")))
    except ModuleNotFoundError:
        # An editable install maps only top-level packages; the data is in the checkout.
        checkout = Path(__file__).resolve().parents[3] / name
        if checkout.is_dir():
            return checkout
        raise


def example_config() -> Path:
    return Path(__file__).with_name("config.example.toml")
