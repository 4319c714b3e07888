"""stock-assets: a Dagster asset platform for FMP end-of-day data in DuckDB."""
