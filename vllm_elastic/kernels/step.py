"""What an attention layer reads from the step it runs in: the contract between the engine's
batch (engine/batch.py, the one implementation) and the kernels.

vLLM hands every attention layer the forward context's attention metadata; while a diffusion
step runs, that is an `AttentionStep`. Anything else (vLLM's profiling and dummy runs) means a
plain bidirectional pass without pages.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from vllm_elastic.kernels.statistics import ProbeBatch
from vllm_elastic.kernels.varlen import VarlenLayout


class AttentionStep(ABC):
    """One step's layout as the attention layers see it. Set by the engine's batch:

    slot_mapping  [rows] the KV slot each query row of the flat batch writes;
    varlen        the varlen kernel's layout (query offsets, key lengths, block tables);
    probes        the Elastic-Cache statistics the current layer must compute, or None.
    """

    slot_mapping: torch.Tensor
    varlen: VarlenLayout
    probes: ProbeBatch | None

    @abstractmethod
    def record_stats(self, similarities: list[float | None], mass: torch.Tensor) -> None:
        """The layer's statistics for `probes` (one entry per probed request)."""
