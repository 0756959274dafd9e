"""The model runner for diffusion requests: one denoising step per engine step.

vLLM's runner machinery stays in charge of loading the model and of the KV cache (spec
discovery, allocation in the shared buffer, binding pages to our attention layers). We replace
`execute_model`: for each scheduled request it runs the canvas through the model with the
request's KV slots (from the block table the scheduler sent), takes the logits of the rows the
request's schedule asks for, lets its `Canvas` commit tokens, and returns the newly final
tokens as the request's sampled tokens. The state of each request's denoising lives here, in
`self.canvases` (rank-local; every TP rank holds the same, decided from the same all-gathered
logits and the same seeds).
"""

from __future__ import annotations

import torch

from vllm.forward_context import set_forward_context
from vllm.platforms import current_platform
from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT, ModelRunnerOutput

from vllm_elastic.attention import DiffusionBatch
from vllm_elastic.decoding import Canvas
from vllm_elastic.params import request_params, server_defaults

if current_platform.is_cpu():
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner as _BaseRunner
else:  # pragma: no cover - needs a GPU
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner as _BaseRunner


class DiffusionModelRunner(_BaseRunner):
    def __init__(self, vllm_config, device) -> None:
        super().__init__(vllm_config, device)
        self.defaults = server_defaults(vllm_config.additional_config)
        self.mask_id = vllm_config.model_config.hf_config.mask_token_id
        self.eos_id = vllm_config.model_config.hf_config.eos_token_id
        self.canvases: dict[str, Canvas] = {}
        self.kv_slots: dict[str, torch.Tensor] = {}

    # Nothing to warm up or capture: the model runs eagerly, steps are data-dependent.
    def warming_up_model(self) -> None:
        return None

    def _sync_requests(self, scheduler_output) -> None:
        for req_id in scheduler_output.finished_req_ids:
            self.canvases.pop(req_id, None)
            self.kv_slots.pop(req_id, None)
        for new in scheduler_output.scheduled_new_reqs:
            sp = new.sampling_params
            params = request_params(self.defaults, sp.extra_args, sp.temperature, sp.seed)
            prompt = new.prompt_token_ids[: len(new.prompt_token_ids) - params.gen_length]
            canvas = Canvas(prompt, params, self.mask_id, self.eos_id)
            self.canvases[new.req_id] = canvas
            self.kv_slots[new.req_id] = self._slots(new.block_ids[0], canvas.length)
        cached = scheduler_output.scheduled_cached_reqs
        for req_id, new_blocks in zip(cached.req_ids, cached.new_block_ids):
            if new_blocks and new_blocks[0]:
                # A canvas is allocated whole at admission; more blocks would mean a bug.
                raise RuntimeError(f"diffusion request {req_id} was given extra KV blocks")

    def _slots(self, block_ids: list[int], length: int) -> torch.Tensor:
        """KV slot of each canvas position: block_ids[pos // bs] * bs + pos % bs."""
        bs = self.cache_config.block_size
        positions = torch.arange(length)
        return torch.tensor(block_ids, dtype=torch.long)[positions // bs] * bs + positions % bs

    @torch.inference_mode()
    def execute_model(self, scheduler_output, intermediate_tensors=None) -> ModelRunnerOutput:
        self._sync_requests(scheduler_output)
        req_ids = list(scheduler_output.num_scheduled_tokens)
        if not req_ids:
            return EMPTY_MODEL_RUNNER_OUTPUT
        canvases = [self.canvases[r] for r in req_ids]
        starts = [0]
        for c in canvases:
            starts.append(starts[-1] + c.length)
        slots = [self.kv_slots[r] for r in req_ids]
        batch = DiffusionBatch(slot_mapping=torch.cat(slots), query_start_loc=starts,
                               kv_slots=slots)
        input_ids = torch.cat([c.tokens for c in canvases]).to(self.device)
        positions = torch.cat([torch.arange(c.length) for c in canvases]).to(self.device)
        with set_forward_context(batch, self.vllm_config):
            hidden = self.model(input_ids=input_ids, positions=positions)
        rows = [c.commit_positions() + s for c, s in zip(canvases, starts)]
        logits = self.model.compute_logits(hidden[torch.cat(rows)]).float().cpu()
        sampled, offset = [], 0
        for c, r in zip(canvases, rows):
            sampled.append(c.step(logits[offset: offset + len(r)]) if not c.finished else [])
            offset += len(r)
        return ModelRunnerOutput(req_ids=req_ids,
                                 req_id_to_index={r: i for i, r in enumerate(req_ids)},
                                 sampled_token_ids=sampled)
