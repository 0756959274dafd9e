"""Elastic-Cache (arXiv 2510.14973, Algorithm 1): when and where to refresh cached K/V.

Followed as the authors' code does it (docs/DECODING.md section 2 says how we read it):
  * step 0 runs the whole canvas with every layer in *update* mode, caching per layer and per
    token the layer input (hidden state), Q and K after RoPE, and V;
  * later steps query only tracked + just-committed + window positions, with every layer in
    *reuse* mode: query rows write their inputs and Q/K/V into the cache and attend over all
    cached K/V (other tokens, off-window MASKs included, ride on the cache);
  * drift test at each reuse layer: cosine similarity (over the head axis, averaged over the
    tracked tokens and all keys) between the tracked tokens' attention rows from their cached
    Q and the layer's K cache as it stood before this step, and the rows from this step's Q/K.
    Every layer tests the union of all layers' tracked tokens;
  * the first layer whose similarity is below gamma makes every *later* layer update: its
    input is the layer's cached inputs for all tokens (fresh for query rows), and it
    recomputes Q/K/V of every token. A trigger at the last layer refreshes nothing;
  * most-attended tokens, at every layer: the window rows' attention summed over heads and
    rows, still-decodable masked keys zeroed, top track_num; next step tracks the union over
    layers;
  * the statistics are computed in the model's dtype (bf16 for real checkpoints).
Deviations, all without effect on the committed tokens: the LM head runs on the window rows
only (the authors' runs it on all positions after a refresh; only window logits are used), and
the accounting counts token-layer evaluations exactly (theirs counts step 0 as L+1 layers).
`full_update=True` puts every layer in update mode at every step: the exact setting.

Beyond the paper (default null, off): `refresh_interval=N` also runs a full step, the whole
canvas with every layer in update mode as at step 0, every N steps (N = 1 is `full_update`).
The drift test only sees the query rows' K/V change, so K/V that go stale elsewhere (decoded
tokens whose context moved, off-window MASKs) are otherwise never refreshed; this bounds
their age, as Fast-dLLM's caches bound it with their block refresh.

Beyond the paper (default off): the authors never refresh layer 0 after step 0, and a trigger
at layer l refreshes only l+1.., so stale shallow outputs are never repaired.
`refresh_layers="trigger"` also recomputes layer l; `"all"` recomputes layers 0..l (every
position, from the cached layer inputs) before going on. And (default 0, off)
`drift_min_weight` leaves out of the drift mean the keys nobody attends to: torch's cosine
scores a key whose weights have norm < 1e-8 in both rows as ~0 however little it moved, which
on a sharply attending model fails the test at the first layer every step.

Beyond the paper (default 0, off): `refresh_band=B` adds to every partial step's query set the
window's span widened by B positions on each side: the decoded tokens just left of the window
and the MASKs just right of it, whose cached K/V the window attends to most and which go stale
first as the window's neighbourhood is decoded (a band covering the canvas is exact).

Beyond the paper: `track_num=0` (only with gamma 0, where the drift test never fails) tracks
no tokens, so no layer computes the drift or most-attended statistics and no tracked rows
join the query set: what is left is the window (+ band) and the full steps.

Beyond the paper (default off): `guard` adds the staleness guard (guard.py): sentinel
positions measure how far each layer's cached inputs have moved; the first layer whose
staleness reaches `guard_bound` reruns over every position and the layers after it update.
"""

from __future__ import annotations

import torch

from vllm_elastic.cache.base import CachePolicy, LayerPlan, LayerStats, Probe
from vllm_elastic.cache.guard import StalenessGuard

# Where a drift trigger at layer l restarts (None: no restart, layers after l widen).
_RESTART = {"after": lambda layer: None, "trigger": lambda layer: layer, "all": lambda layer: 0}


class ElasticCache(CachePolicy):
    name = "elastic"

    def __init__(self, params, num_layers: int) -> None:
        super().__init__(params, num_layers)
        self.full_step = True  # this step runs the whole canvas, every layer in update mode
        self.age = 0  # steps since (and including) the last full step; 0 before step 0
        self.tracked = torch.empty(0, dtype=torch.long)
        self.window = torch.empty(0, dtype=torch.long)
        self.masked = torch.empty(0, dtype=torch.bool)
        self.trigger: int | None = None  # first layer that failed the drift test this step
        self.next_tracked: list[torch.Tensor] = []
        self.similarities: list[float] = []  # drift test results, for analysis
        self.guard = (StalenessGuard(params.guard_bound, params.guard_sentinels)
                      if params.guard else None)
        self.sentinels: torch.Tensor | None = None  # this step's, when the guard runs
        self.step = 0

    def begin_step(self, canvas) -> torch.Tensor:
        interval = self.params.refresh_interval
        self.full_step = (self.age == 0 or self.params.full_update
                          or (interval is not None and self.age >= interval))
        self.age = 1 if self.full_step else self.age + 1
        # The rows whose logits the step reads: the window, or for a shifted-logit model
        # (Dream) its predecessors, as the authors' Dream code queries them.
        self.window = canvas.logit_rows()
        # As the authors do: the most-attended pick skips the MASKs still to be decoded; MASKs
        # left after the first EOS (no longer decoded) may be tracked.
        decodable = torch.arange(canvas.length) < canvas.limit
        self.masked = (canvas.tokens == canvas.mask_id) & decodable
        self.trigger, self.next_tracked, self.sentinels = None, [], None
        self.step += 1
        if self.full_step:
            return torch.arange(canvas.length)
        query = torch.cat([self.tracked, canvas.last_committed, self.window,
                           self._band(canvas.length)]).unique()
        if self.guard is None:
            return query
        sentinels = self.guard.pick(canvas.length, query, self.step)
        if sentinels.numel() == 0:  # the query set covers the canvas: nothing can be stale
            return query
        self.sentinels = sentinels
        return torch.cat([query, sentinels]).unique()

    def _band(self, length: int) -> torch.Tensor:
        """Beyond the paper: the window's span widened by `refresh_band` on each side."""
        band = self.params.refresh_band
        if band == 0 or self.window.numel() == 0:
            return self.window[:0]
        lo, hi = int(self.window.min()), int(self.window.max())
        return torch.arange(max(lo - band, 0), min(hi + 1 + band, length))

    def in_update_mode(self, layer: int) -> bool:
        return self.full_step or (self.trigger is not None and layer > self.trigger)

    def layer_plan(self, layer: int) -> LayerPlan:
        widen = not self.full_step and self.trigger is not None and layer == self.trigger + 1
        # gamma 0 never fails (the similarity of non-negative rows is >= 0): no test to run.
        drift = not self.in_update_mode(layer) and self.trigger is None and self.params.gamma > 0
        # track_num 0 (with gamma 0): nobody reads the most-attended pick, no statistics.
        probe = (Probe(tracked=self.tracked if drift else self.tracked[:0], window=self.window,
                       min_weight=self.params.drift_min_weight)
                 if self.params.track_num > 0 else None)
        # The guard compares this layer's output with the next layer's cached inputs: not
        # once a trigger has put the next layers in update mode, not after the last layer.
        guarded = (self.sentinels is not None and self.trigger is None
                   and layer + 1 < self.num_layers)
        return LayerPlan(store_inputs=True, widen=widen, probe=probe,
                         sentinels=self.sentinels if guarded else None)

    def observe(self, layer: int, stats: LayerStats) -> int | None:
        starts = []  # where each failed test restarts (None: no restart, later layers update)
        if stats.similarity is not None:
            self.similarities.append(stats.similarity)
            if stats.similarity < self.params.gamma:
                starts.append(_RESTART[self.params.refresh_layers](layer))
        if stats.staleness is not None and self.guard.fires(stats.staleness):
            # This layer's output is stale for the positions it did not run: rerun it (or,
            # with refresh_layers "all", every layer up to it) over every position.
            starts.append(0 if self.params.refresh_layers == "all" else layer)
        restart = None
        if starts and self.trigger is None:
            self.trigger = layer
            restart = min((s for s in starts if s is not None), default=None)
        if stats.attention_mass is not None:
            mass = stats.attention_mass.masked_fill(self.masked, 0.0)
            k = min(self.params.track_num, mass.numel())
            self.next_tracked.append(torch.topk(mass, k).indices)
        return restart

    def end_step(self, canvas) -> None:
        if self.next_tracked:
            self.tracked = torch.cat(self.next_tracked).unique()
