"""The Dream checkpoint's config (`model_type: "Dream"`), readable without remote code.

Dream-v0 (and DiffuCoder, Dream-Coder) ship `configuration_dream.py` behind an `auto_map`;
registering this class for `model_type: "Dream"` lets vLLM and transformers load them with
trust_remote_code off. Field names are Qwen2's, which are also the names vLLM reads. Its
class defaults are Dream-v0-Instruct-7B's checkpoint values where they differ from the
remote class's (the remote class defaults are not the checkpoint's).

Two facts the engine reads from every diffusion config: `mask_token_id`, and `logit_shift`:
Dream predicts canvas position q from the output row at q - 1 (its head was initialised from
an autoregressive model), LLaDA from row q itself (`logit_shift` 0).
"""

from transformers import PretrainedConfig


class DreamConfig(PretrainedConfig):
    model_type = "Dream"
    logit_shift = 1

    def __init__(
        self,
        vocab_size: int = 152064,
        hidden_size: int = 3584,
        intermediate_size: int = 18944,
        num_hidden_layers: int = 28,
        num_attention_heads: int = 28,
        num_key_value_heads: int = 4,
        hidden_act: str = "silu",
        max_position_embeddings: int = 131072,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 1000000.0,
        tie_word_embeddings: bool = False,
        mask_token_id: int = 151666,
        pad_token_id: int = 151643,
        bos_token_id: int = 151643,
        eos_token_id: int = 151643,
        attention_dropout: float = 0.0,
        **kwargs,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.mask_token_id = mask_token_id
        self.attention_dropout = attention_dropout
        self.head_dim = kwargs.pop("head_dim", None) or hidden_size // num_attention_heads
        for unused in ("use_sliding_window", "sliding_window", "max_window_layers", "use_mrope",
                       "rope_scaling", "use_cache", "initializer_range"):
            kwargs.pop(unused, None)
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                         eos_token_id=eos_token_id, tie_word_embeddings=tie_word_embeddings,
                         **kwargs)
        if hidden_act != "silu":
            raise ValueError(f"Dream config: only hidden_act='silu' is supported, got "
                             f"{hidden_act!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("Dream config: num_attention_heads must be a multiple of "
                             "num_key_value_heads")


def register_with_transformers() -> None:
    """Let AutoConfig/AutoTokenizer open Dream checkpoints without their remote code."""
    from transformers import AutoConfig

    AutoConfig.register("Dream", DreamConfig, exist_ok=True)


register_with_transformers()
