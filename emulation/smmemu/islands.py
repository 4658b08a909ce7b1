"""Where the emulated run gets its islands: the analysis of the workload's ELF (issue 4).

The analysis finds each function's range, fix-ups and internal branch targets; this adapter only
translates its answer into IslandSpecs at the image's place in the arena.  Nothing here decodes
code: until codeisland.analysis exists, the run stops with an error saying so.
"""

from __future__ import annotations

import importlib

from codeisland.errors import EmulationError

from .plans import IslandSpec
from .workload import WorkloadImage


def analysis_source(image: WorkloadImage, base: int) -> dict[str, IslandSpec]:
    try:
        analysis = importlib.import_module("codeisland.analysis")
    except ImportError as exc:
        raise EmulationError(
            "islands need the analysis (codeisland.analysis, issue 4), which is not installed "
            "in this tree yet"
        ) from exc
    adapter = getattr(analysis, "relocatable_functions", None)
    if adapter is None:
        raise EmulationError("codeisland.analysis has no relocatable_functions(); update smmemu")
    specs: dict[str, IslandSpec] = adapter(image.path, base)
    return specs
