"""The model runner for diffusion requests: one denoising step per engine step.

vLLM's runner machinery stays in charge of loading the model and of the KV cache (spec
discovery, allocation in the shared buffer, binding pages to our attention layers). We replace
`execute_model`: it lays the scheduled requests out in one batch (batch.py) with their KV
slots (from the block table the scheduler sent), runs it through the model's layers (the
step's executor, executor.py, owns the layer loop), takes the logits of the rows the
request's schedule asks for, lets its `Canvas` commit tokens, and returns the newly final
tokens as the request's sampled tokens. The state of each request's denoising lives here, one
`RequestState` per request (rank-local; every TP rank holds the same, decided from the same
all-gathered logits and the same seeds). Its parameters were resolved once, in the engine
core's scheduler (defaults, overrides and seed), and arrive with the request.

A request with images (LLaDA-V) has them encoded here, once, at admission
(`model.embed_multimodal`), and keeps their embeddings in its `ImageRows` until it ends: any
step may compute image positions from layer 0 (step 0, refreshes, dual cache's prompt), and
those rows' layer-0 inputs are the image features instead of the placeholder ids' embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vllm.forward_context import set_forward_context
from vllm.logger import init_logger
from vllm.platforms import current_platform
from vllm.v1.outputs import ModelRunnerOutput

from vllm_elastic.engine.accounting import Accounting
from vllm_elastic.engine.batch import DiffusionBatch, RequestPass
from vllm_elastic.engine.executor import StepExecutor
from vllm_elastic.cache import CachePolicy, make_policy
from vllm_elastic.decoding.canvas import Canvas, TokenRules
from vllm_elastic.params import (DiffusionParams, check_policy_fits_pages, page_layout,
                                 resolved_params)

logger = init_logger(__name__)

if current_platform.is_cpu():
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner as _BaseRunner
else:  # pragma: no cover - needs a GPU
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner as _BaseRunner


@dataclass
class ImageRows:
    """One request's image tokens: which canvas positions hold them, and their embeddings."""

    row_of: torch.Tensor  # [canvas] index into `embeds`, -1 at text and MASK positions
    embeds: torch.Tensor  # [image tokens, hidden] on the model's device

    def place(self, x: torch.Tensor, positions: torch.Tensor) -> None:
        """Overwrite the rows of `x` (one per position) that hold image tokens."""
        index = self.row_of[positions]
        rows = (index >= 0).nonzero()[:, 0]
        if rows.numel():
            x[rows.to(x.device)] = self.embeds[index[rows].to(x.device)].to(x.dtype)


@dataclass
class RequestState:
    """Everything the worker keeps about one diffusion request."""

    params: DiffusionParams
    canvas: Canvas
    policy: CachePolicy
    slots: torch.Tensor  # KV slot of every canvas position (from its block table)
    accounting: Accounting
    images: ImageRows | None = None


class DiffusionModelRunner(_BaseRunner):
    def __init__(self, vllm_config, device) -> None:
        super().__init__(vllm_config, device)
        self.page_layout = page_layout(vllm_config.additional_config)
        hf = vllm_config.model_config.hf_config
        # A model family that stops at end-of-turn (LLaDA-V) decodes with its rules: forced
        # -inf ids, a trimmed vocabulary, and the stop (decoding/canvas.py TokenRules).
        stop_id = getattr(hf, "eot_token_id", None)
        self.mask_id = hf.mask_token_id
        self.eos_id = hf.eos_token_id if stop_id is None else stop_id
        self.rules = TokenRules() if stop_id is None else TokenRules(
            tuple(hf.suppressed_token_ids), hf.sampled_vocab_size, stop_at_eos=True)
        self.num_layers = hf.num_hidden_layers
        self.num_heads = hf.num_attention_heads // vllm_config.parallel_config.tensor_parallel_size
        # Dream predicts position q from the output row q - 1 (LLaDA: row q).
        self.logit_shift = getattr(hf, "logit_shift", 0)
        self.requests: dict[str, RequestState] = {}
        # Requests whose decoding raised: reported to the scheduler, which finishes them with
        # FINISHED_ERROR, so one bad request never takes the engine down.
        self.failed: set[str] = set()

    # Nothing to warm up or capture: the model runs eagerly, steps are data-dependent.
    def warming_up_model(self) -> None:
        return None

    def _fail(self, req_id: str) -> None:
        logger.exception("diffusion request %s failed; finishing it with an error", req_id)
        self.requests.pop(req_id, None)
        self.failed.add(req_id)

    def _sync_requests(self, scheduler_output) -> None:
        for req_id in scheduler_output.finished_req_ids:
            self.requests.pop(req_id, None)
        for new in scheduler_output.scheduled_new_reqs:
            try:
                self.requests[new.req_id] = self._admit(new)
            except Exception:
                self._fail(new.req_id)
        cached = scheduler_output.scheduled_cached_reqs
        for req_id, new_blocks in zip(cached.req_ids, cached.new_block_ids):
            if new_blocks and new_blocks[0]:
                # A canvas is allocated whole at admission; more blocks would mean a bug.
                raise RuntimeError(f"diffusion request {req_id} was given extra KV blocks")

    def _admit(self, new) -> RequestState:
        params = resolved_params(new.sampling_params.extra_args)
        check_policy_fits_pages(params, self.page_layout)  # refused alone if it slipped by
        prompt = new.prompt_token_ids[: len(new.prompt_token_ids) - params.gen_length]
        canvas = Canvas(prompt, params, self.mask_id, self.eos_id, self.logit_shift, self.rules)
        return RequestState(params, canvas, make_policy(params, self.num_layers),
                            self._slots(new.block_ids[0], canvas.length),
                            Accounting(self.num_layers, params.cache_policy),
                            self._encode_images(new.mm_features, canvas.length))

    def _encode_images(self, features, length: int) -> ImageRows | None:
        """A new request's images through the model's encoder, once (one batched call)."""
        if not features:
            return None
        from vllm.multimodal.utils import group_and_batch_mm_kwargs

        features = sorted(features, key=lambda f: f.mm_position.offset)
        if any(f.data is None for f in features):
            raise RuntimeError("image data did not reach the worker (processor cache on)")
        embeds: list[torch.Tensor] = []
        for _, _, kwargs in group_and_batch_mm_kwargs([(f.modality, f.data) for f in features],
                                                      device=self.device):
            embeds += list(self.model.embed_multimodal(**kwargs))
        row_of = torch.full((length,), -1, dtype=torch.long)
        start = 0
        for f, e in zip(features, embeds):
            if e.shape[0] != f.mm_position.length:
                raise RuntimeError(f"image at {f.mm_position.offset}: {e.shape[0]} features "
                                   f"for {f.mm_position.length} placeholder tokens")
            row_of[f.mm_position.offset: f.mm_position.offset + e.shape[0]] = \
                torch.arange(start, start + e.shape[0])
            start += e.shape[0]
        return ImageRows(row_of, torch.cat(embeds))

    def _slots(self, block_ids: list[int], length: int) -> torch.Tensor:
        """KV slot of each canvas position: block_ids[pos // bs] * bs + pos % bs."""
        bs = self.cache_config.block_size
        positions = torch.arange(length)
        return torch.tensor(block_ids, dtype=torch.long)[positions // bs] * bs + positions % bs

    @torch.inference_mode()
    def execute_model(self, scheduler_output, intermediate_tensors=None) -> ModelRunnerOutput:
        self._sync_requests(scheduler_output)
        req_ids = [r for r in scheduler_output.num_scheduled_tokens
                   if r in self.requests and not self.requests[r].canvas.finished]
        if not req_ids:
            return self._output(list(scheduler_output.num_scheduled_tokens), {})
        states = [self.requests[r] for r in req_ids]
        passes = [RequestPass(s.policy, s.slots, s.policy.begin_step(s.canvas), s.accounting)
                  for s in states]
        batch = DiffusionBatch(passes, self.device, self.cache_config.block_size, self.num_heads)
        input_ids = torch.cat([s.canvas.tokens[p.active] for s, p in zip(states, passes)])
        input_ids = input_ids.to(self.device)
        embeds = self._input_embeds(states, passes, input_ids)
        stack = self.model.layer_stack()
        executor = StepExecutor(batch, stack)
        with set_forward_context(executor.contexts, self.vllm_config):
            hidden = executor.run(stack.embed(input_ids) if embeds is None else embeds)
        wanted = [s.canvas.logit_rows() for s in states]
        rows = torch.cat([batch.output_rows(i, w) for i, w in enumerate(wanted)])
        logits = self.model.compute_logits(hidden[rows.to(self.device)]).float().cpu()
        released, offset = {}, 0
        for r, s, w in zip(req_ids, states, wanted):
            try:
                released[r] = s.canvas.step(logits[offset: offset + len(w)])
                s.policy.end_step(s.canvas)
            except Exception:
                self._fail(r)
            offset += len(w)
        return self._output(list(scheduler_output.num_scheduled_tokens), released)

    def _input_embeds(self, states: list[RequestState], passes: list[RequestPass],
                      input_ids: torch.Tensor) -> torch.Tensor | None:
        """Layer-0 inputs when a request of the step has images (else None: the model embeds
        the ids): the ids' embeddings with each image position's features in place."""
        if all(s.images is None for s in states):
            return None
        x = self.model.embed_input_ids(input_ids)
        offset = 0
        for s, p in zip(states, passes):
            if s.images is not None:
                s.images.place(x[offset: offset + p.active.numel()], p.active)
            offset += p.active.numel()
        return x

    def _output(self, req_ids: list[str], released: dict[str, list[int]]) -> ModelRunnerOutput:
        output = ModelRunnerOutput(req_ids=req_ids,
                                   req_id_to_index={r: i for i, r in enumerate(req_ids)},
                                   sampled_token_ids=[released.get(r, []) for r in req_ids])
        # Extra fields ride along to the scheduler (the executor pickles the whole object):
        # per-request compute accounting, and the requests that failed.
        output.diffusion_accounting = {r: self.requests[r].accounting.as_dict()
                                       for r in req_ids if r in self.requests}
        output.diffusion_failed, self.failed = sorted(self.failed), set()
        return output
