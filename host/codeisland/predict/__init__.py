"""Prediction: the heat model, relocation priority, and the policies it is compared with."""

from .model import MODEL_VERSION, HeatModel
from .policies import POLICIES, Policy, make_policy
from .priority import Candidate, CostModel, select_moves

__all__ = [
    "MODEL_VERSION",
    "POLICIES",
    "Candidate",
    "CostModel",
    "HeatModel",
    "Policy",
    "make_policy",
    "select_moves",
]
