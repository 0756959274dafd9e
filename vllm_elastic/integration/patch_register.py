"""The patch register: every place vllm_elastic bends vLLM, in one list (vllm-ascend's style).

A *bend* is a runtime patch of vLLM code, a private vLLM field we write, a private vLLM method
we override, an internal registry we add to, or a vLLM contract we reuse for another purpose.
Each entry says what it touches, where our code does it, why, and what upstream change would
remove it. `apply_all()` runs once per process from `register()`:

  1. the version guard: vLLM must be a release we support (SUPPORTED_VLLM);
  2. every bend's `touches` must still exist in the installed vLLM (a dotted attribute, or
     `Class#field` for an instance field its `__init__` sets), else startup fails naming the
     bend: a renamed internal never misbehaves silently;
  3. the bends that change vLLM at runtime are applied.

tests/test_patch_register.py checks that every private vLLM name our code touches is listed.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

SUPPORTED_VLLM = ("0.32.",)
KINDS = ("runtime patch", "private field", "private override", "registry", "contract reuse")


@dataclass(frozen=True)
class Bend:
    name: str
    kind: str
    touches: tuple[str, ...]  # "module:Attr.path" or "module:Class#instance_field"
    site: str  # where our code does it
    why: str
    removed_when: str
    apply: Callable[[], None] | None = None  # runtime patches and registries only


def _patch(site: str) -> Callable[[], None]:
    """The function `module.function` of this package (imported when applied: vLLM first)."""
    module, _, function = site.partition(".")

    def apply() -> None:
        getattr(importlib.import_module(f"vllm_elastic.integration.{module}"), function)()
    return apply


SCHED = "vllm.v1.core.sched.scheduler:Scheduler"
REGISTER: tuple[Bend, ...] = (
    Bend("config classes", "registry",
         ("vllm.transformers_utils.config:_CONFIG_REGISTRY",),
         "patches.register_configs",
         "official LLaDA/Dream config.json name remote code (auto_map); registering our config "
         "classes for model_type `llada` / `Dream` / `llava_llada` (LLaDA-V) loads them with "
         "trust_remote_code off",
         "a public vLLM API to register a config class for a model_type",
         _patch("patches.register_configs")),
    Bend("request validator", "runtime patch",
         ("vllm.platforms.interface:Platform.validate_request",
          "vllm.v1.engine.input_processor:InputProcessor.process_inputs"),
         "validation.install_request_validator",
         "bad diffusion parameters must be a 400 naming the parameter before the engine sees "
         "the request; validate_request is the hook, but it is not given the engine's config, "
         "so process_inputs is wrapped to say whose request it is (several LLMs per process)",
         "a plugin hook for request validation that receives the engine's config",
         _patch("validation.install_request_validator")),
    Bend("Ray executor on CPU", "runtime patch",
         ("vllm.platforms.cpu:CpuPlatform.ray_device_key",
          "vllm.v1.executor.ray_executor_v2:RayExecutorV2._get_actor_resource_kwargs",
          "vllm.v1.executor.ray_executor_v2:RayWorkerProc.get_node_and_physical_gpu_ids",
          "vllm.v1.executor.ray_executor_v2:initialize_ray_cluster"),
         "patches.patch_ray_on_cpu",
         "vLLM 0.32 refuses Ray on CPU (no Ray device key, resources={'': n}, accelerator ids "
         "a CPU actor lacks); the key becomes 'CPU', actors ask for no GPU, report no device "
         "ids, and a private Ray instance starts on 127.0.0.1 when no cluster is named",
         "CpuPlatform supporting Ray upstream (a non-empty ray_device_key)",
         _patch("patches.patch_ray_on_cpu")),
    Bend("diffusion metrics on /metrics", "runtime patch",
         ("vllm.v1.engine.output_processor:OutputProcessor.process_outputs",),
         "patches.patch_metrics (counts in metrics.py)",
         "/metrics shows the API process's registry only, and a request's accounting reaches "
         "that process only in its finished output; stat-logger plugins get no per-request "
         "data. The wrapper counts finished diffusion outputs, behaviour unchanged",
         "stat-logger plugins receiving per-request custom stats",
         _patch("patches.patch_metrics")),
    Bend("JSON booleans in vllm_xargs", "runtime patch",
         ("vllm.entrypoints.openai.chat_completion.protocol:ChatCompletionRequest",
          "vllm.entrypoints.openai.completion.protocol:CompletionRequest"),
         "patches.patch_xargs_booleans",
         "the field is dict[str, str | int | float | list], so pydantic turns JSON true into 1 "
         "and {'gen_length': true} would run a 1-token canvas instead of a 400; bool is added "
         "to the value union (validation of values is params')",
         "vLLM keeping JSON booleans in vllm_xargs",
         _patch("patches.patch_xargs_booleans")),
    Bend("canvas written in place", "private field",
         ("vllm.v1.request:Request#_all_token_ids", "vllm.v1.request:Request#_output_token_ids"),
         "engine/scheduler.py: _make_canvas, _update_request_with_output",
         "a diffusion request's tokens are a fixed canvas: the prompt becomes prompt + MASKs "
         "(all_token_ids rebuilt over a new list) and released tokens overwrite MASKs in place "
         "instead of growing the sequence, while still appended to the output",
         "a request type whose tokens can be updated in place (no such API in vLLM)"),
    Bend("released tokens, not sampled ones", "private override",
         (f"{SCHED}._update_request_with_output",),
         "engine/scheduler.py: DiffusionScheduler._update_request_with_output",
         "stock code appends sampled tokens and checks max_model_len on the growing sequence; "
         "ours writes them into the canvas and stops only at EOS, stop ids or max_tokens",
         "a scheduler hook for how a step's output updates a request"),
    Bend("images encoded by the worker", "private override",
         (f"{SCHED}._try_schedule_encoder_inputs",),
         "engine/scheduler.py: DiffusionScheduler._try_schedule_encoder_inputs",
         "stock code encodes a request's images when their prompt positions are first computed "
         "and frees them after; a canvas recomputes its prompt positions at every refresh, so "
         "the worker encodes a request's images once, at admission, and keeps them until the "
         "request ends (engine/runner.py), and the scheduler schedules no encoder work",
         "an encoder-output lifetime of 'until the request finishes' in vLLM's encoder cache"),
    Bend("LLaDA-V's chunked prompt tokenization", "private override",
         ("vllm.multimodal.processing.processor:BaseMultiModalProcessor._apply_prompt_updates",
          "vllm.multimodal.processing.processor:BaseMultiModalProcessor._call_hf_processor"),
         "models/llada_v_processor.py: LLaDAVProcessor",
         "vLLM's renderer tokenizes the whole prompt, but LLaDA-V's official code tokenizes the "
         "text between <image> marks chunk by chunk (and drops the token after each image); "
         "the prompt is re-tokenized that way where vLLM places the image tokens, and the "
         "pixels come from our preprocessing (LLaDA-V ships no HF processor class)",
         "a processor hook that receives the prompt text, and a processor-less model path"),
    Bend("accounting in the finished output", "private override",
         (f"{SCHED}._free_request",),
         "engine/scheduler.py: DiffusionScheduler._free_request",
         "the only per-request field that travels from the engine core to RequestOutput and "
         "the HTTP response is kv_transfer_params: ours carries the compute accounting when no "
         "KV connector set it",
         "per-request custom output fields in EngineCoreOutput"),
    Bend("worker failures as grammar failures", "contract reuse",
         (f"{SCHED}#grammar_compile_error_reqs",),
         "engine/scheduler.py: DiffusionScheduler.update_from_output",
         "a request whose decoding raised in the worker must end alone with FINISHED_ERROR; "
         "stock code does exactly that for the ids in this set (grammar compile failures)",
         "a public way for a worker to fail one request"),
    Bend("extra fields on ModelRunnerOutput", "contract reuse",
         ("vllm.v1.outputs:ModelRunnerOutput",),
         "engine/runner.py: _output (diffusion_accounting, diffusion_failed)",
         "per-request accounting and failures ride from the worker to the scheduler on the "
         "step's output object (the executor pickles it whole)",
         "a typed extension field on ModelRunnerOutput"),
    Bend("no sampled-token slot", "contract reuse",
         (f"{SCHED}#num_sampled_tokens_per_step",),
         "engine/scheduler.py: DiffusionScheduler.__init__",
         "tokens are released in place, so no context slot is reserved for a sampled token",
         "a scheduler setting for models that decode in place"),
    Bend("resolved parameters in extra_args", "contract reuse",
         ("vllm.sampling_params:SamplingParams.extra_args",),
         "engine/scheduler.py: _make_canvas (params.RESOLVED_KEY)",
         "the engine core resolves defaults, overrides and the seed once; the record reaches "
         "every worker (every TP rank) with the request, so all ranks decode alike",
         "a per-request plugin payload delivered to workers"),
)


def check_vllm_version() -> str:
    import vllm

    version = getattr(vllm, "__version__", "unknown")
    if not version.startswith(SUPPORTED_VLLM):
        raise RuntimeError(
            f"vllm_elastic supports vLLM {', '.join(v + 'x' for v in SUPPORTED_VLLM)}; found "
            f"vLLM {version}. Its patch register touches vLLM internals and would misbehave "
            f"silently.")
    return version


def touch_exists(touch: str) -> bool:
    """Whether a bend's target still exists in the installed vLLM."""
    module_name, _, path = touch.partition(":")
    path, _, field = path.partition("#")
    try:
        obj = importlib.import_module(module_name)
        for part in path.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return False
    if not field:
        return True
    return f"self.{field}" in inspect.getsource(obj.__init__)


def apply_all() -> None:
    check_vllm_version()
    for bend in REGISTER:
        missing = [t for t in bend.touches if not touch_exists(t)]
        if missing:
            raise RuntimeError(f"vllm_elastic: the vLLM internals of bend {bend.name!r} are "
                               f"gone in this vLLM: {missing}; see integration/patch_register.py")
    for bend in REGISTER:
        if bend.apply is not None:
            bend.apply()
