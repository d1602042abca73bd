"""The GL-MIL MoE network: global encoder, lesion-instance encoder, MIL pooling, clinical
encoder, mixture of experts and heads, built from a plans file by :func:`build_network`."""

from glmil_auto.model.builder import ABLATIONS, build_network
from glmil_auto.model.network import GLMILMoE, GLMILOutput

__all__ = ["ABLATIONS", "GLMILMoE", "GLMILOutput", "build_network"]
