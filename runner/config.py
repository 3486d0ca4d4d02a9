"""Settings: ``imagerun.toml`` plus the environment, resolved once per command.

Lookup order for the file: ``--config`` → ``IMAGERUN_CONFIG`` → ``./imagerun.toml`` (optional).
API keys are never read from the file: routes only name the environment variable.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from runner.errors import ConfigError
from runner.pricing import PriceBook, load_price_book
from runner.routes import Catalog, Route, load_catalog

#: The database when neither ``--db``, ``IMAGERUN_DB`` nor the config file names one.
DEFAULT_DB = "sqlite+aiosqlite:///imagerun.db"
DEFAULT_DATA = "imagerun-data"
_ROUTE_KEYS = frozenset(f.name for f in fields(Route)) - {"name"} | {"failure_charges"}
_TOP_KEYS = frozenset({"db", "data", "routes", "prices"})
_SECRETISH = ("api_key", "key", "token", "secret", "password")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    db_url: str
    data_dir: Path
    config_path: Path | None
    catalog: Catalog
    book: PriceBook
    environ: Mapping[str, str] = field(default_factory=dict)


def load_settings(
    *,
    config: Path | None = None,
    db: str | None = None,
    data: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings from flags, the environment and the config file (in that order)."""
    env = dict(os.environ if environ is None else environ)
    path = config or (Path(env["IMAGERUN_CONFIG"]) if env.get("IMAGERUN_CONFIG") else None)
    if path is None and Path("imagerun.toml").is_file():
        path = Path("imagerun.toml")
    raw = _read(path) if path else {}
    db_url = db or env.get("IMAGERUN_DB") or raw.get("db") or DEFAULT_DB
    data_dir = Path(data or env.get("IMAGERUN_DATA") or raw.get("data") or DEFAULT_DATA)
    return Settings(
        db_url=str(db_url),
        data_dir=data_dir.expanduser().resolve(),
        config_path=path,
        catalog=load_catalog(raw.get("routes"), env),
        book=load_price_book(raw.get("prices")),
        environ=env,
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    _check(path, raw)
    return raw


def _check(path: Path, raw: Mapping[str, Any]) -> None:
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(
                f"{path}: unknown setting {key!r} (known: {', '.join(sorted(_TOP_KEYS))})"
            )
    for name, table in (raw.get("routes") or {}).items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"{path}: [routes.{name}] must be a table")
        for key in table:
            if key.lower() in _SECRETISH:
                raise ConfigError(
                    f"{path}: [routes.{name}] {key}: API keys never go in the config file; "
                    "set `api_key_env` to the name of an environment variable instead"
                )
            if key not in _ROUTE_KEYS:
                raise ConfigError(f"{path}: [routes.{name}]: unknown setting {key!r}")
