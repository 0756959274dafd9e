"""What `register()` installs into vLLM, and the request checks that answer HTTP 400.

vLLM loads our `vllm.general_plugins` entry point in every process it starts (API server or
`LLM`, engine core, each worker), so everything here is idempotent and cheap:
  * the LLaDA and Dream config classes for `model_type: llada` / `Dream` (no remote code);
  * the `LLaDAModelLM` and `DreamModel` architectures, registered lazily by dotted name;
  * a per-architecture config hook that selects our scheduler and worker, and turns off what a
    fixed canvas cannot use (prefix caching, chunked prefill, async scheduling), only where
    the user has not chosen explicitly;
  * a request validator run in the API process before the engine sees the request, so bad
    input is a 400 naming the parameter and never an engine crash;
  * the patches in `patches/` (vLLM internals we cannot avoid touching).
"""

from __future__ import annotations

import contextvars

from vllm.model_executor.models.config import VerifyAndUpdateConfig

# Architecture named in a checkpoint's config.json -> our vLLM model class.
MODEL_CLASSES = {"LLaDAModelLM": "vllm_elastic.models.llada:LLaDAModelLM",
                 "DreamModel": "vllm_elastic.models.dream:DreamModel"}
DIFFUSION_ARCHITECTURES = tuple(MODEL_CLASSES)
SCHEDULER_CLS = "vllm_elastic.engine.scheduler.DiffusionScheduler"
WORKER_CLS = "vllm_elastic.engine.worker.DiffusionWorker"

_registered = False
# The config of the engine whose input processor is handling the current request: one
# process may hold several engines (two `LLM`s), each with its own limits and defaults.
_request_config: contextvars.ContextVar = contextvars.ContextVar("vllm_elastic_request_config",
                                                                 default=None)


def register_all() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP
    from vllm.transformers_utils.config import _CONFIG_REGISTRY

    from vllm_elastic.dream_config import DreamConfig
    from vllm_elastic.llada_config import LLaDAConfig
    from vllm_elastic.patches import apply_all

    apply_all()
    _CONFIG_REGISTRY["llada"] = LLaDAConfig
    _CONFIG_REGISTRY["Dream"] = DreamConfig
    for arch, cls in MODEL_CLASSES.items():
        ModelRegistry.register_model(arch, cls)
        MODELS_CONFIG_MAP[arch] = DiffusionConfigHook
    _install_request_validator()


class DiffusionConfigHook(VerifyAndUpdateConfig):
    """vLLM calls this once per model config (in the API/LLM process) for our architectures."""

    @staticmethod
    def verify_and_update_config(vllm_config) -> None:
        from vllm_elastic.params import server_defaults

        sched, cache = vllm_config.scheduler_config, vllm_config.cache_config
        model_config = vllm_config.model_config
        server_defaults(vllm_config.additional_config)  # bad server settings fail at startup
        if sched.scheduler_cls is None:
            sched.scheduler_cls = SCHEDULER_CLS
        if vllm_config.parallel_config.worker_cls == "auto":
            vllm_config.parallel_config.worker_cls = WORKER_CLS
        if sched.async_scheduling is None:
            sched.async_scheduling = False
        # A canvas is recomputed whole each step: no prefix reuse, never split across steps.
        cache.enable_prefix_caching = False
        sched.enable_chunked_prefill = False
        sched.long_prefill_token_threshold = 0
        sched.max_num_batched_tokens = max(sched.max_num_batched_tokens,
                                           model_config.max_model_len)
        # The denoising step is Python control flow per request; nothing to capture in graphs.
        model_config.enforce_eager = True


# SamplingParams fields LLaDA decoding has no meaning for, with the value that means "off".
_UNSUPPORTED_SAMPLING = {
    "top_p": 1.0, "top_k": (0, -1), "min_p": 0.0, "presence_penalty": 0.0,
    "frequency_penalty": 0.0, "repetition_penalty": 1.0, "logprobs": None,
    "prompt_logprobs": None, "min_tokens": 0, "logit_bias": None, "allowed_token_ids": None,
    "bad_words": None, "structured_outputs": None,
}


def serves_diffusion(vllm_config) -> bool:
    return bool(set(vllm_config.model_config.architectures or ()) & set(DIFFUSION_ARCHITECTURES))


def check_request(prompt_len: int, sampling_params, vllm_config) -> None:
    """Raise DiffusionParamError if this request cannot be decoded as asked by this engine."""
    from vllm_elastic.params import (DiffusionParamError, check_policy_fits_pages, page_layout,
                                     sampling_request_params, server_defaults)

    settings = vllm_config.additional_config
    params = sampling_request_params(server_defaults(settings), sampling_params)
    # Dream's own schedule samples with top_p/top_k; the others do not.
    supported = ("top_p", "top_k") if params.schedule == "dream" else ()
    for name, off in _UNSUPPORTED_SAMPLING.items():
        value = getattr(sampling_params, name, off)
        if name in supported or value in (off if isinstance(off, tuple) else (off,)) or \
                value in ([], {}):
            continue
        raise DiffusionParamError(
            name, f"{name}={value!r} is not supported by this diffusion schedule; supported "
            f"sampling options: temperature, seed, max_tokens, stop, stop_token_ids, "
            f"ignore_eos, n, the diffusion extra args, and top_p/top_k with schedule 'dream'")
    check_policy_fits_pages(params, page_layout(settings))
    if params.schedule == "window" and sampling_params.ignore_eos:
        raise DiffusionParamError(
            "ignore_eos", "ignore_eos is not supported with schedule='window': Elastic-Cache's "
            "window schedule stops decoding at the first EOS; use schedule='blocks'")
    limit = vllm_config.model_config.max_model_len
    if prompt_len + params.gen_length > limit:
        raise DiffusionParamError(
            "prompt", f"the prompt has {prompt_len} tokens and gen_length is {params.gen_length}:"
            f" the canvas ({prompt_len + params.gen_length}) exceeds max_model_len ({limit});"
            f" use a prompt of at most {limit - params.gen_length} tokens or a smaller gen_length")


def _install_request_validator() -> None:
    """vLLM's input processor calls `platform.validate_request(inputs, params)` for every
    request before the engine sees it; we add our checks there. It does not pass the engine's
    config, so the processor's `process_inputs` is wrapped to say whose request it is."""
    from vllm.platforms import current_platform
    from vllm.v1.engine.input_processor import InputProcessor

    platform_cls = type(current_platform)
    original = platform_cls.validate_request.__func__
    original_process = InputProcessor.process_inputs

    def process_inputs(self, *args, **kwargs):
        token = _request_config.set(self.vllm_config)
        try:
            return original_process(self, *args, **kwargs)
        finally:
            _request_config.reset(token)

    def validate_request(cls, processed_inputs, params) -> None:
        original(cls, processed_inputs, params)
        from vllm.sampling_params import SamplingParams

        config = _request_config.get()
        if config is None or not serves_diffusion(config) or \
                not isinstance(params, SamplingParams):
            return  # not a diffusion model's request
        from vllm.exceptions import VLLMValidationError

        from vllm_elastic.params import DiffusionParamError

        prompt_ids = processed_inputs.get("prompt_token_ids") or []
        try:
            check_request(len(prompt_ids), params, config)
        except DiffusionParamError as e:
            raise VLLMValidationError(str(e), parameter=e.param) from None

    InputProcessor.process_inputs = process_inputs
    platform_cls.validate_request = classmethod(validate_request)
