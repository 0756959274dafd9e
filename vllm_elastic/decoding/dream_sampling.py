"""Dream's `diffusion_generate` step, for one request: which masked positions to commit, and to
what (the `dream` schedule; decoding.DreamSchedule calls it, and so does the oracle).

Followed from Dream's generation code (`_sample` and `sample_tokens`), for a canvas whose
masked positions' logits (already shifted: row q - 1 predicts position q) are given:

* timesteps = linspace(1, eps, steps + 1); at step i, t = timesteps[i], s = timesteps[i + 1];
* `origin`: each masked position is revealed with probability 1 - s/t (1 at the last step),
  independently; revealed positions get a sampled token;
* `maskgit_plus` / `topk_margin` / `entropy`: every masked position gets a token and a
  confidence (its probability; top-1 minus top-2 probability; negative entropy), and the
  k = int(n_masked * (1 - s/t)) most confident are committed (all at the last step), or,
  with alg_temp > 0, k positions drawn from softmax(confidence / alg_temp);
* sampling: logits / temperature (if > 0), then top_p, then top_k filtering, softmax; a token
  is drawn from the probabilities at temperature > 0, else the most probable is taken.

Ours, where Dream's code leaves it open: randomness comes from the request's own seeded
`torch.Generator` (Dream draws from torch's global RNG), in this order per step: origin's
reveal uniforms, then token draws (one multinomial per sampled row), then alg_temp's position
draw; confidence ties go to the lower position (Dream's topk over the canvas leaves them to
the kernel); the MASK id's logit is excluded, as for LLaDA; everything is float32 (Dream's
logits are bf16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vllm_elastic.params import DiffusionParams


def _top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches top_p (the first always)."""
    sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
    cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    remove = cumulative > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_idx, remove)
    return logits.masked_fill(mask, torch.finfo(logits.dtype).min)


def _top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    k = min(top_k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1)[0][..., -1, None]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def sample_tokens(logits: torch.Tensor, params: DiffusionParams, mask_id: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, x0) per row of logits [n, vocab], by Dream's `sample_tokens` and `alg`."""
    logits = logits.float().clone()
    logits[:, mask_id] = float("-inf")
    if params.temperature > 0:
        logits = logits / params.temperature
    if params.top_p is not None and params.top_p < 1:
        logits = _top_p(logits, params.top_p)
    if params.top_k is not None:
        logits = _top_k(logits, params.top_k)
    probs = torch.softmax(logits, dim=-1)
    if params.temperature > 0 and logits.shape[0]:
        x0 = torch.multinomial(probs, 1, generator=generator)[:, 0]
        confidence = probs.gather(-1, x0[:, None])[:, 0]
    else:
        confidence, x0 = probs.max(dim=-1)
    if params.alg == "topk_margin":
        top2 = torch.topk(probs, 2, dim=-1).values
        confidence = top2[:, 0] - top2[:, 1]
    elif params.alg == "entropy":
        confidence = (probs * torch.log(probs + 1e-10)).sum(dim=-1)
    return confidence, x0


def dream_step(logits: torch.Tensor, params: DiffusionParams, step: int, mask_id: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Step `step` for the n masked positions whose logits [n, vocab] are given, in canvas
    order: (indices of the positions to commit, x0 [n])."""
    n, steps = logits.shape[0], params.num_steps
    timesteps = torch.linspace(1, params.eps, steps + 1)
    last = step >= steps - 1
    t, s = timesteps[min(step, steps - 1)], timesteps[min(step, steps - 1) + 1]
    x0 = torch.full((n,), mask_id, dtype=torch.long)
    if params.alg == "origin":
        p_transfer = 1.0 if last else float(1 - s / t)
        reveal = torch.rand(n, generator=generator) < p_transfer
        if bool(reveal.any()):
            _, x0[reveal] = sample_tokens(logits[reveal], params, mask_id, generator)
        return reveal.nonzero()[:, 0], x0
    confidence, x0 = sample_tokens(logits, params, mask_id, generator)
    k = n if last else int(torch.tensor(float(n)) * (1 - s / t))
    if k <= 0:
        return torch.empty(0, dtype=torch.long), x0
    if params.alg_temp:
        weights = torch.softmax(confidence / params.alg_temp, dim=-1)
        return torch.multinomial(weights, k, generator=generator), x0
    return torch.sort(confidence, descending=True, stable=True).indices[:k], x0
