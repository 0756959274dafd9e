"""Prometheus metrics of diffusion decoding, shown on the server's /metrics.

vLLM's /metrics shows only the API process's default Prometheus registry, and the compute
accounting of a request (engine/scheduler.py) reaches that process only inside the finished
request's `kv_transfer_params`. So the plugin observes the outputs as vLLM's OutputProcessor
receives them (patches.py: patch_metrics, listed in patch_register.py) and counts here, per cache policy:

  vllm_elastic:requests_total                  finished diffusion requests
  vllm_elastic:denoising_steps_total           denoising steps run
  vllm_elastic:token_layer_evals_total         token-layer evaluations computed
  vllm_elastic:token_layer_evals_full_total    what full recompute would have computed
  vllm_elastic:layer_refreshes_total{layer}    steps in which a layer recomputed every token
"""

from __future__ import annotations

from functools import cache


@cache
def _metrics():
    from prometheus_client import Counter

    labels = ["cache_policy"]
    return {
        "requests": Counter("vllm_elastic:requests", "Finished diffusion requests", labels),
        "steps": Counter("vllm_elastic:denoising_steps", "Denoising steps run", labels),
        "evals": Counter("vllm_elastic:token_layer_evals",
                         "Token-layer evaluations computed", labels),
        "full": Counter("vllm_elastic:token_layer_evals_full",
                        "Token-layer evaluations full recompute would have computed", labels),
        "refreshes": Counter("vllm_elastic:layer_refreshes",
                             "Steps in which a layer recomputed every token", labels + ["layer"]),
    }


def record_finished(accounting: dict) -> None:
    """Count one finished request's accounting (the dict engine/scheduler.py attaches)."""
    m, policy = _metrics(), accounting.get("cache_policy", "none")
    m["requests"].labels(policy).inc()
    m["steps"].labels(policy).inc(accounting["steps"])
    m["evals"].labels(policy).inc(accounting["token_layer_evals"])
    m["full"].labels(policy).inc(accounting["token_layer_evals_full"])
    for layer, n in enumerate(accounting["refreshes_per_layer"]):
        m["refreshes"].labels(policy, str(layer)).inc(n)


def observe_engine_outputs(engine_core_outputs) -> None:
    for out in engine_core_outputs:
        params = getattr(out, "kv_transfer_params", None)
        if out.finish_reason is not None and isinstance(params, dict) and "diffusion" in params:
            record_finished(params["diffusion"])
