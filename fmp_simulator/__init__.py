"""FMP simulator: a real HTTP server (Starlette under uvicorn) that behaves like
Financial Modeling Prep's ``/stable/`` API, with seeded deterministic data,
plan gating, limits, injectable faults and a ground-truth API.

    from fmp_simulator import SimConfig, Faults, SimulatorServer, GroundTruth
    with SimulatorServer(SimConfig(n_symbols=200, api_keys=("k",))) as sim:
        sim.base_url, sim.control_url, sim.faults, sim.requests(), sim.truth
"""

from .app import busiest_minute
from .config import BadDays, Faults, SimConfig
from .server import SimulatorServer, add_arguments, config_from_args, serve
from .truth import GroundTruth

__all__ = ["BadDays", "Faults", "GroundTruth", "SimConfig", "SimulatorServer", "add_arguments", "busiest_minute", "config_from_args", "serve"]
