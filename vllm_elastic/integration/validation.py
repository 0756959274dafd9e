"""The request checks that answer HTTP 400 before the engine sees a request.

vLLM's input processor calls `platform.validate_request(inputs, params)` for every request in
the API (or `LLM`) process; `install_request_validator` (a bend of the patch register) adds
`check_request` there, so bad input is a `VLLMValidationError` naming the parameter (HTTP
400) and never an engine crash.
"""

from __future__ import annotations

import contextvars

from vllm_elastic.models import ARCHITECTURES

# The config of the engine whose input processor is handling the current request: one
# process may hold several engines (two `LLM`s), each with its own limits and defaults.
_request_config: contextvars.ContextVar = contextvars.ContextVar("vllm_elastic_request_config",
                                                                 default=None)


def serves_diffusion(vllm_config) -> bool:
    return bool(set(vllm_config.model_config.architectures or ()) & set(ARCHITECTURES))


# SamplingParams fields LLaDA decoding has no meaning for, with the value that means "off".
_UNSUPPORTED_SAMPLING = {
    "top_p": 1.0, "top_k": (0, -1), "min_p": 0.0, "presence_penalty": 0.0,
    "frequency_penalty": 0.0, "repetition_penalty": 1.0, "logprobs": None,
    "prompt_logprobs": None, "min_tokens": 0, "logit_bias": None, "allowed_token_ids": None,
    "bad_words": None, "structured_outputs": None,
}


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


def install_request_validator() -> None:
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
