"""The GPU-aware scheduler (SPEC §7): view → feasible → rank → select, assembled in stack.place."""

from fedraft.domain.scheduler.explain import Explanation, decode_explanation, encode_explanation, render
from fedraft.domain.scheduler.stack import Decision, place
from fedraft.domain.scheduler.view import FederationView

__all__ = ["Decision", "Explanation", "FederationView", "decode_explanation", "encode_explanation", "place", "render"]
