"""Where a request's parameters come from: server defaults (`--additional-config
'{"diffusion": {...}}'`), its `extra_args`/`vllm_xargs`, vLLM's own sampling fields, and the
record the engine core resolved for the workers."""

from __future__ import annotations

from typing import Any, Mapping

from vllm_elastic.params.fields import (APPLIES_TO, CACHE_POLICY_CHOICES, EXTRA_ARG_KEYS,
                                        PAGE_LAYOUT_CHOICES, POLICIES_NEEDING_FULL_PAGES,
                                        RESOLVED_KEY, SERVER_KEYS, DiffusionParamError,
                                        DiffusionParams, check_choice)


def request_params(
    defaults: DiffusionParams, extra_args: Mapping[str, Any] | None, temperature: float,
    seed: int | None, top_p: float | None = None, top_k: int | None = None,
) -> DiffusionParams:
    """The parameters one request decodes with: server defaults <- its extra_args (+ vLLM's
    temperature, seed, top_p, top_k). A key that is not a diffusion parameter is refused,
    naming it and the known ones."""
    # RESOLVED_KEY is the engine core's own record (set on this very object when the engine
    # runs in-process); it is recomputed from the other keys, never trusted from a client.
    overrides = {k: v for k, v in (extra_args or {}).items() if k != RESOLVED_KEY}
    unknown = sorted(set(overrides) - set(EXTRA_ARG_KEYS))
    if unknown:
        raise DiffusionParamError(
            unknown[0], f"unknown diffusion parameter(s) {unknown} in extra_args/vllm_xargs; "
            f"known: {list(EXTRA_ARG_KEYS)} (temperature and seed are sampling parameters)")
    overrides["temperature"] = temperature
    overrides["seed"] = seed
    overrides["top_p"] = None if top_p is None or top_p >= 1.0 else top_p  # vLLM's "off": 1
    overrides["top_k"] = None if top_k is None or top_k <= 0 else top_k  # vLLM's "off": 0/-1
    params = defaults.with_overrides(overrides)
    check_applicable(params, extra_args or {})
    return params


def check_applicable(params: DiffusionParams, keys: Mapping[str, Any]) -> None:
    """Refuse a request key that has no effect on this request (see APPLIES_TO). Server
    defaults are not checked: they apply to whichever requests they fit."""
    for key in keys:
        if key not in APPLIES_TO:
            continue
        field, allowed = APPLIES_TO[key]
        actual = getattr(params, field)
        if actual not in allowed:
            raise DiffusionParamError(
                key, f"{key} applies only with {field} in {list(allowed)}; this request has "
                f"{field} {actual!r}: set {field} or drop {key}")


def sampling_request_params(defaults: DiffusionParams, sp) -> DiffusionParams:
    """`request_params` from a vLLM SamplingParams."""
    return request_params(defaults, sp.extra_args, sp.temperature, sp.seed,
                          getattr(sp, "top_p", None), getattr(sp, "top_k", None))


def resolved_params(extra_args: Mapping[str, Any] | None) -> DiffusionParams:
    """The parameters the engine core resolved for a request (`RESOLVED_KEY`), in a worker."""
    if not extra_args or RESOLVED_KEY not in extra_args:
        raise RuntimeError("diffusion request reached the worker without resolved parameters")
    return DiffusionParams(**extra_args[RESOLVED_KEY])


def _server_section(additional_config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    section = (additional_config or {}).get("diffusion") or {}
    if not isinstance(section, Mapping):
        raise DiffusionParamError("additional_config.diffusion",
                                  "additional_config['diffusion'] must be a JSON object")
    return section


def page_layout(additional_config: Mapping[str, Any] | None) -> str:
    """What each token's page row holds, server-wide: `full` = K, V, Q and the layer input
    (every policy); `kv` = K and V only (half the memory; `elastic` is then refused)."""
    layout = _server_section(additional_config).get("page_layout", "full")
    check_choice("page_layout", layout, PAGE_LAYOUT_CHOICES)
    return layout


def check_policy_fits_pages(params: DiffusionParams, layout: str) -> None:
    if params.cache_policy in POLICIES_NEEDING_FULL_PAGES and layout != "full":
        allowed = [p for p in CACHE_POLICY_CHOICES if p not in POLICIES_NEEDING_FULL_PAGES]
        raise DiffusionParamError(
            "cache_policy", f"cache_policy {params.cache_policy!r} keeps Q and layer inputs in "
            f"the pages, but this server runs page_layout {layout!r} (K and V only); allowed "
            f"here: {allowed}, or restart the server with page_layout 'full'")


def server_defaults(additional_config: Mapping[str, Any] | None) -> DiffusionParams:
    """Server-wide defaults: `--additional-config '{"diffusion": {"gen_length": 256, ...}}'`."""
    section = dict(_server_section(additional_config))
    bad = set(section) - set(EXTRA_ARG_KEYS) - set(SERVER_KEYS)
    if bad:
        raise DiffusionParamError(
            f"additional_config.diffusion.{sorted(bad)[0]}",
            f"unknown server default(s) {sorted(bad)}; allowed: "
            f"{list(EXTRA_ARG_KEYS + SERVER_KEYS)}")
    for key in SERVER_KEYS:
        section.pop(key, None)
    defaults = DiffusionParams().with_overrides(section)
    check_policy_fits_pages(defaults, page_layout(additional_config))
    return defaults
