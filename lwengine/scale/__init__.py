"""Scalable identification: RKHS sketches, certified exact top-k, approximate top-k, synthetic markets.

Entry point for users: :meth:`lwengine.SpecIndex.topk`; see docs/scale.md.
"""
from .market import REGIMES, MarketSpec, make_market, make_queries, market_arrays
from .sketch import NystromSketch, SketchParams, rff_sketch

__all__ = ["SketchParams", "NystromSketch", "rff_sketch", "MarketSpec", "make_market", "make_queries",
           "market_arrays", "REGIMES"]
