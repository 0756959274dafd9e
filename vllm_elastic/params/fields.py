"""The diffusion decoding parameters: one typed, validated record and its allowed values.

One typed record, `DiffusionParams`, is what every decoder (the reference oracle, the vLLM
worker) reads. Server defaults come from `--additional-config '{"diffusion": {...}}'`; a request
overrides any of them through `SamplingParams.extra_args` (offline) or `vllm_xargs` (HTTP).
Temperature and seed are vLLM's own SamplingParams fields, not extra args.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from vllm_elastic.params.checks import (DiffusionParamError, check_bool, check_choice,
                                        check_int, coerce, is_number)

REMASKING_CHOICES = ("low_confidence", "random")
SCHEDULE_CHOICES = ("blocks", "window", "dream")
ALG_CHOICES = ("origin", "maskgit_plus", "topk_margin", "entropy")
CACHE_POLICY_CHOICES = ("none", "prefix", "dual", "elastic")
REFRESH_LAYERS_CHOICES = ("after", "trigger", "all")

# What a token's page row holds, server-wide (kernels/page_layout.py): `full` = K, V, Q and
# the layer input; `kv` = K and V only. The policies that read Q and inputs back need `full`.
PAGE_LAYOUT_CHOICES = ("full", "kv")
POLICIES_NEEDING_FULL_PAGES = ("elastic",)
# Server-wide settings in additional_config["diffusion"] that are not per-request parameters.
SERVER_KEYS = ("page_layout",)

# extra_args keys a request may set; any other key is refused (a typo must not go unnoticed).
EXTRA_ARG_KEYS = ("gen_length", "block_length", "steps", "remasking", "threshold", "schedule",
                  "window_length", "tokens_per_iter", "cache_policy", "gamma", "track_num",
                  "refresh_interval", "full_update", "refresh_layers", "drift_min_weight",
                  "guard", "guard_bound", "guard_sentinels", "refresh_band", "alg", "alg_temp",
                  "eps")
# What a request parameter acts on: (the field that must allow it, the values that do). A
# request that sets one where it has no effect is refused, since it would otherwise run
# without what it asked for (window_length without schedule 'window' is the classic one).
APPLIES_TO = {
    "block_length": ("schedule", ("blocks",)),
    "steps": ("schedule", ("blocks", "dream")),
    "remasking": ("schedule", ("blocks", "window")),
    "threshold": ("schedule", ("blocks", "window")),
    "window_length": ("schedule", ("window",)),
    "tokens_per_iter": ("schedule", ("window",)),
    "alg": ("schedule", ("dream",)),
    "alg_temp": ("schedule", ("dream",)),
    "eps": ("schedule", ("dream",)),
    "refresh_interval": ("cache_policy", ("prefix", "dual", "elastic")),
    "gamma": ("cache_policy", ("elastic",)),
    "track_num": ("cache_policy", ("elastic",)),
    "full_update": ("cache_policy", ("elastic",)),
    "refresh_layers": ("cache_policy", ("elastic",)),
    "drift_min_weight": ("cache_policy", ("elastic",)),
    "guard": ("cache_policy", ("elastic",)),
    "refresh_band": ("cache_policy", ("elastic",)),
    "guard_bound": ("guard", (True,)),
    "guard_sentinels": ("guard", (True,)),
}
# The staleness guard's defaults (chosen on the long model: docs/BENCHMARKS.md).
GUARD_BOUND = 0.2
GUARD_SENTINELS = 64
# Where the engine core puts a request's resolved parameters for the worker (not a user key).
RESOLVED_KEY = "_vllm_elastic_resolved"


@dataclass(frozen=True)
class DiffusionParams:
    gen_length: int = 128
    block_length: int = 32
    # None means one token per step: steps = gen_length (LLaDA's usual setting).
    steps: int | None = None
    remasking: str = "low_confidence"
    # Fast-dLLM parallel decoding: commit every masked block position whose confidence exceeds
    # it (and always the most confident one); None = the fixed top-k schedule.
    threshold: float | None = None
    temperature: float = 0.0
    seed: int | None = None
    # The `dream` schedule only (Dream's diffusion_generate): vLLM's own top_p/top_k fields
    # (None = off), the confidence `alg`, `alg_temp` (None/0: top-k positions; > 0: positions
    # drawn from softmax(confidence / alg_temp)) and the timestep schedule's `eps`.
    top_p: float | None = None
    top_k: int | None = None
    alg: str = "entropy"
    alg_temp: float | None = None
    eps: float = 1e-3
    # Which masked positions may be committed each step: LLaDA's `blocks` (top-k schedule, or
    # Fast-dLLM's threshold), or Elastic-Cache's `window` of the leftmost masked positions
    # (commit every one with confidence >= min(threshold, max confidence), or the top
    # `tokens_per_iter` when threshold is null).
    schedule: str = "blocks"
    window_length: int = 16
    tokens_per_iter: int = 1
    # Which tokens go through which layers, and which cached state is reused (cache/).
    cache_policy: str = "none"
    gamma: float = 0.9  # elastic: refresh deeper layers when attention similarity < gamma
    # elastic: most-attended tokens tracked per layer (the drift test's rows). 0 (with gamma
    # 0, beyond the paper): none tracked, so no attention statistics are computed at all.
    track_num: int = 1
    # prefix/dual: full refresh every `refresh_interval` steps as well as at each block start;
    # elastic (beyond the paper): a full step every `refresh_interval` steps as well as on
    # drift. 1 makes them recompute everything (their exact, degenerate setting); null = never.
    refresh_interval: int | None = None
    # elastic: every layer in update mode at every step (its exact, degenerate setting).
    full_update: bool = False
    # elastic, beyond the paper: which layers a drift trigger at layer l refreshes: `after`
    # (l+1.., the paper's), `trigger` (l.., recomputing l), `all` (0.., recomputing 0..l).
    refresh_layers: str = "after"
    # elastic, beyond the paper: leave out of the drift test's mean the keys whose attention
    # weights (norm over heads) are below this in both the old and the new row. 0 = the
    # authors' statistic over every key, where keys with norm < 1e-8 score cosine ~0 (torch's
    # eps) however little they moved: on sharply attending models that alone fails the test.
    drift_min_weight: float = 0.0
    # elastic, beyond the paper: the staleness guard (cache/guard.py). Each step also runs
    # `guard_sentinels` positions from outside the query set through the layers; where their
    # fresh layer output has moved from the cached one by `guard_bound` or more (relative L2,
    # mean over the sentinels), that layer reruns over every position and the layers after it
    # update. guard_bound 0 refreshes every layer every step (its exact, degenerate setting).
    guard: bool = False
    guard_bound: float = GUARD_BOUND
    guard_sentinels: int = GUARD_SENTINELS
    # elastic, beyond the paper: each partial step also recomputes the `refresh_band`
    # positions on each side of the window (and the committed ones inside it), where cached
    # K/V go stale first as the window's neighbours are decoded. 0 = off; a band covering the
    # canvas recomputes every position every step (exact).
    refresh_band: int = 0

    @property
    def num_steps(self) -> int:
        return self.steps if self.steps is not None else self.gen_length

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.num_steps // self.num_blocks

    def validate(self) -> "DiffusionParams":
        check_int("gen_length", self.gen_length, minimum=1)
        check_int("block_length", self.block_length, minimum=1)
        check_choice("remasking", self.remasking, REMASKING_CHOICES)
        if self.threshold is not None and not (
            is_number(self.threshold) and 0.0 <= self.threshold <= 1.0
        ):
            raise DiffusionParamError(
                "threshold", f"threshold must be a number in [0, 1] or null, got {self.threshold!r}"
            )
        check_choice("schedule", self.schedule, SCHEDULE_CHOICES)
        if self.schedule == "blocks":  # the window schedule has no blocks and no step budget
            self._validate_blocks()
        if self.schedule == "dream":
            self._validate_dream()
        check_choice("cache_policy", self.cache_policy, CACHE_POLICY_CHOICES)
        self._validate_cache()
        if not (is_number(self.temperature) and math.isfinite(self.temperature)
                and self.temperature >= 0):
            raise DiffusionParamError(
                "temperature", f"temperature must be a finite number >= 0, got {self.temperature!r}"
            )
        return self

    def _validate_cache(self) -> None:
        check_choice("refresh_layers", self.refresh_layers, REFRESH_LAYERS_CHOICES)
        check_int("window_length", self.window_length, minimum=1)
        check_int("tokens_per_iter", self.tokens_per_iter, minimum=1)
        check_int("track_num", self.track_num, minimum=0)
        if self.refresh_interval is not None:
            check_int("refresh_interval", self.refresh_interval, minimum=1)
        if not (is_number(self.gamma) and 0.0 <= self.gamma <= 1.0):
            raise DiffusionParamError("gamma", f"gamma must be a number in [0, 1], got "
                                               f"{self.gamma!r}")
        if self.track_num == 0 and self.gamma > 0:
            raise DiffusionParamError(
                "track_num", f"track_num 0 tracks no tokens, so no drift test can run: it "
                             f"needs gamma 0 (no drift test), got gamma {self.gamma!r}")
        if not (is_number(self.drift_min_weight) and 0.0 <= self.drift_min_weight < 1.0):
            raise DiffusionParamError(
                "drift_min_weight",
                f"drift_min_weight must be a number in [0, 1), got {self.drift_min_weight!r}")
        check_bool("full_update", self.full_update)
        check_bool("guard", self.guard)
        if not (is_number(self.guard_bound) and math.isfinite(self.guard_bound)
                and self.guard_bound >= 0):
            raise DiffusionParamError("guard_bound", f"guard_bound must be a finite number "
                                                     f">= 0, got {self.guard_bound!r}")
        check_int("guard_sentinels", self.guard_sentinels, minimum=1)
        check_int("refresh_band", self.refresh_band, minimum=0)

    def _validate_dream(self) -> None:
        if self.steps is not None:
            check_int("steps", self.steps, minimum=1)
        check_choice("alg", self.alg, ALG_CHOICES)
        if self.alg_temp is not None and not (is_number(self.alg_temp) and self.alg_temp >= 0):
            raise DiffusionParamError("alg_temp", f"alg_temp must be a number >= 0 or null, got "
                                                  f"{self.alg_temp!r}")
        if not (is_number(self.eps) and 0.0 < self.eps < 1.0):
            raise DiffusionParamError("eps", f"eps must be a number in (0, 1), got {self.eps!r}")
        if self.top_p is not None and not (is_number(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise DiffusionParamError("top_p", f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k is not None:
            check_int("top_k", self.top_k, minimum=1)

    def _validate_blocks(self) -> None:
        if self.gen_length % self.block_length:
            raise DiffusionParamError(
                "gen_length",
                f"gen_length ({self.gen_length}) must be a multiple of block_length "
                f"({self.block_length})",
            )
        if self.steps is not None:
            check_int("steps", self.steps, minimum=1)
            if self.steps % self.num_blocks:
                raise DiffusionParamError(
                    "steps",
                    f"steps ({self.steps}) must be divisible by the number of blocks "
                    f"(gen_length / block_length = {self.num_blocks})",
                )

    def with_overrides(self, overrides: Mapping[str, Any]) -> "DiffusionParams":
        """Apply overrides (only known keys), coercing HTTP's JSON values, then validate."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise DiffusionParamError(
                sorted(unknown)[0],
                f"unknown diffusion parameter(s) {sorted(unknown)}; allowed: "
                f"{[f.name for f in dataclasses.fields(self)]}",
            )
        values = {k: coerce(k, v) for k, v in overrides.items()}
        return dataclasses.replace(self, **values).validate()
