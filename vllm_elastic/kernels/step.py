"""What an attention layer reads from the step it runs in: the contract between the step's
executor (engine/executor.py) and the kernels.

vLLM hands every attention layer the forward context's attention metadata, by vLLM's
convention a dict keyed by layer name. While a diffusion step runs, the executor puts each
layer's `LayerContext` there just before it calls the layer; the context is immutable and
the layer's answer (its output and statistics) is its return value, never written back.
Anything else (vLLM's profiling and dummy runs) means a plain bidirectional pass without
pages.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vllm.forward_context import get_forward_context, is_forward_context_available

from vllm_elastic.kernels.statistics import ProbeBatch
from vllm_elastic.kernels.varlen import VarlenLayout


@dataclass(frozen=True)
class LayerContext:
    """One layer's layout for the step's batch, as attention reads it:

    positions     [rows] canvas position of each query row of the flat batch (RoPE);
    slot_mapping  [rows] the KV slot each query row writes;
    varlen        the varlen kernel's layout (query offsets, key lengths, block tables);
    probes        the Elastic-Cache statistics this layer must compute, or None.
    """

    positions: torch.Tensor
    slot_mapping: torch.Tensor
    varlen: VarlenLayout
    probes: ProbeBatch | None


@dataclass(frozen=True)
class AttentionStats:
    """What a probed attention layer returns beside its output, one entry per probed request
    (`LayerContext.probes.requests`): the drift test's similarity (None where that request
    runs no test) and the window's attention mass over every key [P, keys]."""

    similarities: list[float | None]
    mass: torch.Tensor


def layer_context(layer_name: str) -> LayerContext | None:
    """The context of the layer `layer_name` in the running step, or None outside one."""
    if not is_forward_context_available():
        return None
    contexts = get_forward_context().attn_metadata
    context = contexts.get(layer_name) if isinstance(contexts, dict) else None
    return context if isinstance(context, LayerContext) else None
