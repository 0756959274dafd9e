"""vLLM's scheduler, taught that a diffusion request is a fixed canvas decoded in place.

The mapping (docs/ARCHITECTURE.md has the full table):
  * admission: the prompt is extended with gen_length MASK ids, so the request's "prompt" is
    its whole canvas and vLLM's KV cache manager allocates all of its blocks at once (all or
    nothing: a request that does not fit waits in the queue, nothing is preempted or dropped);
  * every step: each running request is rescheduled over its whole canvas
    (num_computed_tokens is reset to 0; no new blocks are needed, so no preemption);
  * output: the worker returns the newly final answer tokens; they are written in place into
    the canvas (the token count never grows) and appended to the output, so stock `check_stop`
    handles EOS, stop ids and max_tokens, and stock code streams, frees and aborts.
"""

from __future__ import annotations

import dataclasses
import random

from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.core.sched.utils import check_stop
from vllm.v1.request import Request
from vllm.v1.utils import ConstantList

from vllm_elastic.params import RESOLVED_KEY, sampling_request_params, server_defaults


class DiffusionScheduler(Scheduler):
    def __init__(self, vllm_config, *args, **kwargs) -> None:
        super().__init__(vllm_config, *args, **kwargs)
        self.defaults = server_defaults(vllm_config.additional_config)
        hf = vllm_config.model_config.hf_config
        self.mask_id = hf.mask_token_id
        self.stop_id = getattr(hf, "eot_token_id", None)  # a model that stops at end-of-turn
        # The number of MASK ids appended to each request: where its answer starts.
        self.gen_lengths: dict[str, int] = {}
        self.accounting: dict[str, dict] = {}
        # The worker returns final tokens in place; no context slot is reserved for a new one.
        self.num_sampled_tokens_per_step = 0

    def add_request(self, request: Request) -> None:
        if request.request_id not in self.requests and request.sampling_params is not None:
            self._make_canvas(request)
        super().add_request(request)

    def _make_canvas(self, request: Request) -> None:
        sp = request.sampling_params
        # Parameters were validated in the API process (plugin.validate_request); this cannot fail.
        params = sampling_request_params(self.defaults, sp)
        if params.temperature > 0 and sp.seed is None:
            # Every TP rank must draw the same noise: fix the seed once, here, for all of them.
            sp.seed = random.getrandbits(62)
            params = dataclasses.replace(params, seed=sp.seed)
        # Resolved once, here; the workers read this record and nothing else.
        sp.extra_args = {**(sp.extra_args or {}), RESOLVED_KEY: dataclasses.asdict(params)}
        if self.stop_id is not None and self.stop_id not in (sp.stop_token_ids or ()):
            # LLaDA-V's decoding ends at <|eot_id|> (the answer is what comes before it).
            sp.stop_token_ids = [*(sp.stop_token_ids or ()), self.stop_id]
        canvas = list(request.prompt_token_ids) + [self.mask_id] * params.gen_length
        request.prompt_token_ids = canvas  # a new list: the frontend's copy stays the prompt
        request._all_token_ids = list(canvas)
        request.all_token_ids = ConstantList(request._all_token_ids)
        request.num_prompt_tokens = len(canvas)
        request.max_tokens = min(request.max_tokens, params.gen_length)
        self.gen_lengths[request.request_id] = params.gen_length

    def schedule(self, *args, **kwargs):
        # Every step recomputes the canvas the worker chooses; schedule all of it again.
        for request in self.running:
            request.num_computed_tokens = 0
        return super().schedule(*args, **kwargs)

    def _try_schedule_encoder_inputs(self, request: Request, num_computed_tokens: int,
                                     num_new_tokens: int, encoder_compute_budget: int,
                                     shift_computed_tokens: int = 0):
        # The worker encodes a request's images itself, once, at admission, and keeps them for
        # every step (a refresh recomputes image positions long after vLLM would have freed
        # their encoder outputs): nothing for vLLM's encoder cache to schedule.
        return [], num_new_tokens, encoder_compute_budget, [], []

    def _update_request_with_output(self, request: Request, new_token_ids: list[int],
                                    is_stale: bool = False) -> tuple[list[int], bool]:
        answer_start = request.num_prompt_tokens - self.gen_lengths[request.request_id]
        stopped = False
        for n, token in enumerate(new_token_ids, 1):
            request._all_token_ids[answer_start + request.num_output_tokens] = token
            request._output_token_ids.append(token)
            # The canvas never grows and fits max_model_len (validated), so vLLM's length cap
            # must not fire on it: only EOS, stop ids and max_tokens end a request here.
            stopped = check_stop(request, self.max_model_len + 1)
            if stopped:
                del new_token_ids[n:]
                break
        return new_token_ids, stopped

    def update_from_output(self, scheduler_output, model_runner_output):
        # The worker's per-request compute accounting (latest value wins).
        self.accounting.update(getattr(model_runner_output, "diffusion_accounting", None) or {})
        # Requests whose decoding failed in the worker: stock code finishes the ids in this set
        # with FINISHED_ERROR and emits their outputs (the client gets an error, the engine
        # keeps serving); it is the set vLLM uses for grammar failures.
        self.grammar_compile_error_reqs.update(
            r for r in getattr(model_runner_output, "diffusion_failed", ()) if r in self.requests)
        return super().update_from_output(scheduler_output, model_runner_output)

    def _free_request(self, request: Request, *args, **kwargs):
        self.gen_lengths.pop(request.request_id, None)
        accounting = self.accounting.pop(request.request_id, None)
        kv_transfer_params, ec_transfer_params = super()._free_request(request, *args, **kwargs)
        if accounting is not None and kv_transfer_params is None:
            # Reaches RequestOutput.kv_transfer_params and non-streaming HTTP responses.
            kv_transfer_params = {"diffusion": accounting}
        return kv_transfer_params, ec_transfer_params
