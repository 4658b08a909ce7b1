"""Front-end cost model (Python side): parameters from the platform profile, a pure-Python
reference of the native model, and the modeled-cycles view the loop and benchmark use.

It is a MODEL of an L1 instruction cache and instruction TLB, not a measurement of any CPU.
"""

from .params import FrontendParams, load_frontend_params
from .reference import ReferenceFrontEnd

__all__ = ["FrontendParams", "ReferenceFrontEnd", "load_frontend_params"]
