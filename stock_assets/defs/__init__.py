"""The Dagster definitions: assets (with their checks), jobs, schedules, sensors, partitions and
resources; the code location loads `definitions.defs`."""
