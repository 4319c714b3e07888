"""With no FMP_API_KEY, the platform runs against the built-in FMP simulator.

The commands that run the platform (sync, backfill-failed, ui) call
`fmp_environment()`: it starts one simulator on a free loopback port, points
FMP_BASE_URL and FMP_API_KEY at it for as long as the command lives, and says
so. Resources never start servers: Dagster builds them in every step process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from stock_assets.simulator import Faults, SimConfig, SimulatorServer

DEMO_KEY = "demo"
# A demo-sized universe and a generous limit, so a first sync takes a minute;
# STOCK_ASSETS_SIM_SYMBOLS=19205 and STOCK_ASSETS_SIM_RATE_PER_MIN=750 give the
# full universe at Premium's real pace.
DEMO_SYMBOLS = 600
DEMO_RATE_PER_MIN = 6000
DEMO_LATENCY_S = 0.02


def simulator_config() -> SimConfig:
    return SimConfig(
        seed=int(os.environ.get("STOCK_ASSETS_SIM_SEED", "7")),
        n_symbols=int(os.environ.get("STOCK_ASSETS_SIM_SYMBOLS", DEMO_SYMBOLS)),
        plan=os.environ.get("FMP_PLAN", "premium"),
        api_keys=(DEMO_KEY,),
        rate_limit_per_min=int(os.environ.get("STOCK_ASSETS_SIM_RATE_PER_MIN", DEMO_RATE_PER_MIN)),
        faults=Faults(latency_s=float(os.environ.get("STOCK_ASSETS_SIM_LATENCY_S", DEMO_LATENCY_S))),
    )


@contextmanager
def fmp_environment(log=print) -> Iterator[SimulatorServer | None]:
    """Use the real FMP when a key is set; otherwise a simulator for this command's lifetime."""
    if os.environ.get("FMP_API_KEY"):
        yield None
        return
    config = simulator_config()
    saved = {k: os.environ.get(k) for k in ("FMP_API_KEY", "FMP_BASE_URL", "FMP_RATE_LIMIT_PER_MIN")}
    with SimulatorServer(config, host="127.0.0.1", port=0) as sim:
        os.environ["FMP_API_KEY"] = DEMO_KEY
        os.environ["FMP_BASE_URL"] = sim.base_url
        os.environ.setdefault("FMP_RATE_LIMIT_PER_MIN", str(config.rate_limit_per_min))
        log(f"No FMP_API_KEY set: using the built-in FMP simulator at {sim.base_url} "
            f"({config.n_symbols} symbols, {config.plan} plan, {config.rate_limit_per_min} calls/min). "
            f"Set FMP_API_KEY to use the real FMP.")
        try:
            yield sim
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
