"""Reading TOML / YAML option files, shared by every command that takes ``--config``."""

from __future__ import annotations

from pathlib import Path

from gbuf.errors import GbufError


def read_config_file(path: str | Path) -> dict:
    """The top-level table of a ``.toml``, ``.yaml`` or ``.yml`` file, as a dict.

    Errors name the file and the problem on one line.
    """
    path = Path(path)
    if not path.is_file():
        raise GbufError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise GbufError(f"{path}: config must be .toml, .yaml or .yml")
    except GbufError:
        raise
    except Exception as err:  # tomllib.TOMLDecodeError, yaml.YAMLError
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise GbufError(f"{path}: cannot parse config: {message}") from None
    if not isinstance(data, dict):
        raise GbufError(f"{path}: the top level must be a table of settings")
    return data
