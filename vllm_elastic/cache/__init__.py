"""KV cache policies: which tokens go through which layers, which cached state is reused.

`none` (full recompute), `prefix` and `dual` (Fast-dLLM), `elastic` (Elastic-Cache). One
policy object per request, chosen by its `cache_policy` parameter (cache/base.py says what a
policy decides).
"""

from vllm_elastic.cache.base import CachePolicy, LayerPlan, LayerStats, Probe
from vllm_elastic.cache.dual import DualCache
from vllm_elastic.cache.elastic import ElasticCache
from vllm_elastic.cache.prefix import PrefixCache

POLICIES = {p.name: p for p in (CachePolicy, PrefixCache, DualCache, ElasticCache)}


def make_policy(params, num_layers: int) -> CachePolicy:
    return POLICIES[params.cache_policy](params, num_layers)


__all__ = ["CachePolicy", "LayerPlan", "LayerStats", "Probe", "make_policy", "POLICIES"]
