"""vllm_elastic: serve masked diffusion LMs (LLaDA) through vLLM, with Elastic-Cache.

`register()` is the `vllm.general_plugins` entry point; vLLM calls it in each of its
processes. The work is in `plugin.register_all` (imported lazily so that importing this
package, e.g. for the reference model, does not import vLLM).
"""


def register() -> None:
    from vllm_elastic.plugin import register_all

    register_all()
