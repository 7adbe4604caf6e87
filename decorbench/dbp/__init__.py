"""Decorrelated backpropagation (DBP, arXiv 2405.02385): decorrelation layers and their update."""

from decorbench.dbp.convert import decorrelate
from decorbench.dbp.layers import DecorConv2d, DecorLinear, DecorMixin
from decorbench.dbp.update import decor_layers, diagnostics, fused_for_eval, set_sampling, update

__all__ = ["DecorConv2d", "DecorLinear", "DecorMixin", "decor_layers", "decorrelate", "diagnostics", "fused_for_eval",
           "set_sampling", "update"]
