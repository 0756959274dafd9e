"""Diffusion decoding parameters: the typed record (fields.py) and how a request's values are
resolved from server defaults and its extra args (resolve.py). Every decoder (the oracles,
the vLLM worker) reads a `DiffusionParams`."""

from vllm_elastic.params.fields import (ALG_CHOICES, APPLIES_TO, CACHE_POLICY_CHOICES,
                                        EXTRA_ARG_KEYS, PAGE_LAYOUT_CHOICES,
                                        POLICIES_NEEDING_FULL_PAGES, REFRESH_LAYERS_CHOICES,
                                        REMASKING_CHOICES, RESOLVED_KEY, SCHEDULE_CHOICES,
                                        SERVER_KEYS, DiffusionParamError, DiffusionParams)
from vllm_elastic.params.resolve import (check_applicable, check_policy_fits_pages,
                                         page_layout, request_params, resolved_params,
                                         sampling_request_params, server_defaults)

__all__ = ["ALG_CHOICES", "APPLIES_TO", "CACHE_POLICY_CHOICES", "EXTRA_ARG_KEYS",
           "PAGE_LAYOUT_CHOICES", "POLICIES_NEEDING_FULL_PAGES", "REFRESH_LAYERS_CHOICES",
           "REMASKING_CHOICES", "RESOLVED_KEY", "SCHEDULE_CHOICES", "SERVER_KEYS",
           "DiffusionParamError", "DiffusionParams", "check_applicable",
           "check_policy_fits_pages", "page_layout", "request_params", "resolved_params",
           "sampling_request_params", "server_defaults"]
