"""The diffusion models as vLLM model classes (llada.py, dream.py over the shared layer loop
of stack.py) and their checkpoints' config classes (llada_config.py, dream_config.py)."""

# Architecture named in a checkpoint's config.json -> our vLLM model class (loaded lazily).
ARCHITECTURES = {"LLaDAModelLM": "vllm_elastic.models.llada:LLaDAModelLM",
                 "DreamModel": "vllm_elastic.models.dream:DreamModel",
                 "LlavaLLaDAModelLM": "vllm_elastic.models.llada_v:LlavaLLaDAModelLM"}
