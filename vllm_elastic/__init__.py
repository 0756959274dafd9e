"""vllm_elastic: serve masked diffusion LMs (LLaDA, Dream) through vLLM, with Elastic-Cache.

`register()` is the `vllm.general_plugins` entry point; vLLM calls it in each of its
processes. The work is in `plugin.register_all` (imported lazily so that importing this
package, e.g. for the reference model, does not import vLLM).

Importing the package also registers the LLaDA, LLaDA-V and Dream config classes with
transformers, so AutoConfig/AutoTokenizer open those checkpoints without their remote code.
"""

import vllm_elastic.models.dream_config  # noqa: F401,E402 - registers itself with transformers
import vllm_elastic.models.llada_config  # noqa: F401,E402 - registers itself with transformers
import vllm_elastic.models.llada_v_config  # noqa: F401,E402 - registers itself with transformers


def register() -> None:
    from vllm_elastic.integration.plugin import register_all

    register_all()
