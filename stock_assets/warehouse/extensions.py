"""DuckDB's lake extensions, loaded from their PyPI wheels: nothing is downloaded at run time.

`duckdb-extension-ducklake`, `-sqlite-scanner` and `-postgres-scanner` (pinned beside `duckdb`,
built for that one version) put `<name>.duckdb_extension` in their package folder; DuckDB checks
their signatures, so no unsigned loading is needed. An extension installed the usual way
(`INSTALL ducklake`) is used when its wheel is absent. The scanner of the catalog must be loaded
before `ATTACH 'ducklake:sqlite:...'`: DuckLake otherwise tries to download it, and fails offline.
"""

from __future__ import annotations

import importlib.resources
import importlib.util

import duckdb

from stock_assets.errors import ConfigError

LAKE = ("sqlite_scanner", "postgres_scanner", "ducklake")


def wheel_path(name: str) -> str | None:
    """Where the wheel `duckdb-extension-<name>` put the extension for this DuckDB, if installed."""
    package = f"duckdb_extension_{name}"
    if importlib.util.find_spec(package) is None:
        return None
    path = importlib.resources.files(package) / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    return str(path) if path.is_file() else None


def load(conn: duckdb.DuckDBPyConnection, names: tuple[str, ...] = LAKE) -> None:
    """Load each extension from its wheel, else as DuckDB has it installed; say what to do if neither."""
    for name in names:
        path = wheel_path(name)
        try:
            conn.load_extension(path or name)
        except duckdb.Error as error:
            raise ConfigError(
                f"DuckDB {duckdb.__version__} could not load its {name} extension ({error}). Install the "
                f"wheel built for it: pip install 'duckdb-extension-{name.replace('_', '-')}=="
                f"{duckdb.__version__}' (or `make install`).") from error
