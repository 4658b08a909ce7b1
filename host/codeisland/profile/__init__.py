"""Profiles: per-island, per-window activity plus the context of each window.

format      -- the versioned profile file (JSON), validated on load
attribution -- RIP samples -> original islands, through the driver's address map
features    -- model features from windows: history, time of day, user activity, load,
               data accesses, lagged co-activation
"""

from .attribution import IslandIndex
from .format import PROFILE_FORMAT, PROFILE_VERSION, Profile, ProfiledIsland, Window, WindowContext

__all__ = [
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "IslandIndex",
    "Profile",
    "ProfiledIsland",
    "Window",
    "WindowContext",
]
