"""Loading official checkpoint weights into our vLLM-style modules, by a name map."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from vllm.model_executor.model_loader.weight_utils import default_weight_loader

# Official name -> (our parameter name, shard id of a fused layer or None); (None, None) skips.
NameMap = Callable[[str], tuple[str | None, str | int | None]]


def load_mapped_weights(module: nn.Module, weights: Iterable[tuple[str, torch.Tensor]],
                        map_name: NameMap) -> set[str]:
    """Each checkpoint tensor through its parameter's weight_loader (which shards it for this
    tensor-parallel rank and places fused q/k/v and gate/up parts); returns what was loaded."""
    params = dict(module.named_parameters())
    loaded: set[str] = set()
    for name, tensor in weights:
        target, shard = map_name(name)
        if target is None or target not in params:
            continue  # e.g. lm_head.weight when tied, rotary buffers
        param = params[target]
        loader = getattr(param, "weight_loader", default_weight_loader)
        if shard is None:
            loader(param, tensor)
        else:
            loader(param, tensor, shard)
        loaded.add(target)
    return loaded
