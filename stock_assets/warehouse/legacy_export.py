"""Export a DuckDB-file warehouse to Parquet, one file per table, with each table's count and checksum.

Standalone on purpose (it imports `duckdb` alone): `stock-assets migrate` runs it under the DuckDB
that wrote the file, which may be newer than the lake's (the warehouse files of stock-assets before
the lake were DuckDB 2.0's, which DuckDB 1.5 cannot open). Usage:

    python legacy_export.py WAREHOUSE.duckdb OUT_FOLDER   # prints {table: {columns, rows, checksum}}
"""

import json
import os
import sys

import duckdb

SCHEMAS = ("market", "metrics")


def checksum_sql(columns):
    """An order-free checksum of the rows over `columns`, the same in every DuckDB version: the sum of
    each row's MD5 (its low 64 bits) over its values as text, NULL spelled out."""
    row = ", ".join(f"coalesce(CAST(\"{c}\" AS VARCHAR), '<null>')" for c in columns)
    return f"CAST(coalesce(sum(md5_number_lower(concat_ws('|', {row}))), 0) AS VARCHAR)"


def export(conn, out):
    """Every table of the warehouse's schemas to `out/<schema>.<table>.parquet`; their figures."""
    figures = {}
    tables = conn.execute("SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = "
                          "current_database() AND schema_name IN ('market', 'metrics') ORDER BY ALL").fetchall()
    for schema, table in tables:
        name = f"{schema}.{table}"
        columns = [c for (c,) in conn.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = ? "
            "AND table_name = ? ORDER BY column_index", [schema, table]).fetchall()]
        path = os.path.join(out, f"{name}.parquet")
        conn.execute(f"COPY {name} TO '{path}' (FORMAT parquet)")
        rows, checksum = conn.execute(f"SELECT count(*), {checksum_sql(columns)} FROM {name}").fetchone()
        figures[name] = {"columns": columns, "rows": rows, "checksum": checksum}
    return figures


def main(argv):
    database, out = argv
    conn = duckdb.connect(database, read_only=True)
    try:
        print(json.dumps(export(conn, out)))
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
