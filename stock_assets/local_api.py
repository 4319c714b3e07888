"""With no FMP_API_KEY, the platform runs against the built-in FMP simulator.

The commands that run the platform (sync, backfill-failed, ui) call
`fmp_environment()`: it starts one simulator on a free loopback port, points
FMP_BASE_URL and FMP_API_KEY at it for as long as the command lives, and says
so. This is the one place that changes the environment: the worker processes
and `dagster dev` inherit it. Resources never start servers: Dagster builds
them in every step process.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager

from stock_assets import clock
from stock_assets.config import Config
from fmp_simulator import Faults, SimConfig, SimulatorServer

DEMO_KEY = "demo"


def simulator_config(config: Config) -> SimConfig:
    return SimConfig(
        seed=config.sim_seed,
        n_symbols=config.sim_symbols,
        plan=config.plan,
        api_keys=(DEMO_KEY,),
        rate_limit_per_min=config.sim_rate_per_min,
        faults=Faults(latency_s=config.sim_latency_s),
        now=clock.now,  # the platform's clock: STOCK_ASSETS_NOW moves both
    )


@contextmanager
def fmp_environment(config: Config, log=print) -> Iterator[Config]:
    """Use the real FMP when a key is set; otherwise a simulator for this command's lifetime.

    Yields the configuration the command runs with: with the simulator, its key and address."""
    if not config.uses_simulator:
        yield config
        return
    sim_config = simulator_config(config)
    saved = {k: os.environ.get(k) for k in ("FMP_API_KEY", "FMP_BASE_URL", "FMP_RATE_LIMIT_PER_MIN")}
    with SimulatorServer(sim_config, host="127.0.0.1", port=0) as sim:
        os.environ["FMP_API_KEY"] = DEMO_KEY
        os.environ["FMP_BASE_URL"] = sim.base_url
        os.environ.setdefault("FMP_RATE_LIMIT_PER_MIN", str(sim_config.rate_limit_per_min))
        log(f"No FMP_API_KEY set: using the built-in FMP simulator at {sim.base_url} "
            f"({sim_config.n_symbols} symbols, {sim_config.plan} plan, {sim_config.rate_limit_per_min} calls/min). "
            f"Set FMP_API_KEY to use the real FMP.")
        try:
            yield dataclasses.replace(config, api_key=DEMO_KEY, base_url=sim.base_url,
                                      rate_limit_per_min=config.rate_limit_per_min or sim_config.rate_limit_per_min)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
