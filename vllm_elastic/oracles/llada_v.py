"""Plain-PyTorch LLaDA-V: the oracle its vLLM path is tested against (forward; decoding is in
llada_v_generate.py).

No vLLM. The pieces are the official model's (ML-GSAI/LLaDA-V, `llava_arch.py`,
`siglip_encoder.py`, `multimodal_projector/builder.py`):
  * the vision tower is transformers' SigLIP with the released tower's last encoder layer
    deleted, as the official loader does; features are the remaining last layer's output
    (before post_layernorm, no pooling head, all p*p patches: SigLIP has no CLS token);
  * the projector `mlpNx_gelu` (Linear, exact-erf GELU, Linear, ...) maps them to the LM width;
  * each image's tiles become prompt tokens by models/llada_v_grid.py (anyres unpadding and
    `image_newline`), spliced in order where the tokenized prompt holds the image sentinel
    -200; text pieces are embedded by the LM's table; the result is cut to
    tokenizer_model_max_length; positions are 0..L-1 over the merged sequence;
  * the LM is our LLaDA oracle (oracles/llada.py: the same math under the OLMo-style names);
    the checkpoint's Llama names are mapped onto it (models/llama_names.py).
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from vllm_elastic.models.llada_v_config import IMAGE_TOKEN_INDEX, LlavaLLaDAConfig
from vllm_elastic.models.llada_v_grid import merge_image_features
from vllm_elastic.models.llada_v_image import preprocess_images
from vllm_elastic.models.llada_v_prompt import split_at_images
from vllm_elastic.models.llama_names import (IMAGE_NEWLINE, PROJECTOR_PREFIX,
                                             VISION_TOWER_PREFIX, llama_name, olmo_name)
from vllm_elastic.oracles.llada import ReferenceLLaDA, load_safetensors_dir


def build_projector(config: LlavaLLaDAConfig) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(config.mm_hidden_size, config.hidden_size)]
    for _ in range(1, config.projector_depth()):
        layers += [nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size)]
    return nn.Sequential(*layers)


def build_vision_tower(config: LlavaLLaDAConfig) -> nn.Module:
    """transformers' SigLIP tower with the official loader's deletion of the last layer."""
    from transformers import SiglipVisionModel

    tower = config.vision_tower_config()
    tower.num_hidden_layers -= 1
    return SiglipVisionModel(tower)


class ReferenceLLaDAV(nn.Module):
    def __init__(self, config: LlavaLLaDAConfig) -> None:
        super().__init__()
        self.config = config
        self.lm = ReferenceLLaDA(config.as_llada_config())
        self.vision_tower = build_vision_tower(config)
        self.mm_projector = build_projector(config)
        self.image_newline = nn.Parameter(torch.zeros(config.hidden_size))

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.model.transformer["wte"](ids)

    def encode_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """Pixel tiles [T, 3, S, S] -> projected features [T, p*p, hidden]."""
        out = self.vision_tower(pixel_values=tiles.to(self.image_newline.dtype),
                                output_hidden_states=True)
        return self.mm_projector(out.hidden_states[-1])

    def image_features(self, images: list[Image.Image]) -> list[torch.Tensor]:
        """Each image's prompt tokens [n_i, hidden], in order."""
        tiles, mode = preprocess_images(images, self.config)
        # One tower pass over every tile of the request, as encode_images does.
        encoded = self.encode_tiles(torch.cat(tiles)).split([len(t) for t in tiles])
        return [merge_image_features(f, im.size, self.config, mode, self.image_newline)
                for f, im in zip(encoded, images)]

    def splice(self, ids: list[int], features: list[torch.Tensor]) -> torch.Tensor:
        """Prompt ids holding IMAGE_TOKEN_INDEX once per image -> embeddings [L, hidden]."""
        marks = [i for i, t in enumerate(ids) if t == IMAGE_TOKEN_INDEX]
        if len(marks) != len(features):
            raise ValueError(f"LLaDA-V prompt has {len(marks)} image placeholders for "
                             f"{len(features)} images")
        pieces, start = [], 0
        for mark, feature in zip(marks, features):
            pieces += [self.embed_tokens(torch.tensor(ids[start:mark], dtype=torch.long)),
                       feature]
            start = mark + 1
        pieces.append(self.embed_tokens(torch.tensor(ids[start:], dtype=torch.long)))
        return torch.cat(pieces)[: self.config.tokenizer_model_max_length]

    @torch.no_grad()
    def prompt_embeds(self, ids: list[int], images: list[Image.Image] | None = None
                      ) -> torch.Tensor:
        """The merged prompt [L, hidden]: text embeddings with each image's tokens spliced in."""
        return self.splice(ids, self.image_features(images) if images else [])

    def logits(self, embeds: torch.Tensor) -> torch.Tensor:
        """Embeddings [L, hidden] -> logits [L, vocab], attention over the whole sequence."""
        return self.lm.forward_embeds(embeds[None])[0]

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """Our tensors under the checkpoint's names."""
        return {official_name(k): v for k, v in self.state_dict().items()}

    def load_official(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict({our_name(k): v for k, v in state.items()})

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype = torch.float32) -> "ReferenceLLaDAV":
        model = cls(LlavaLLaDAConfig.from_pretrained(path))
        model.load_official({k: v.to(dtype) for k, v in load_safetensors_dir(path).items()})
        return model.to(dtype).eval()


def official_name(ours: str) -> str:
    """Our parameter name -> the LLaDA-V checkpoint's."""
    if ours.startswith("lm."):
        return llama_name(ours.removeprefix("lm."))
    if ours.startswith("vision_tower."):
        return VISION_TOWER_PREFIX + ours.removeprefix("vision_tower.")
    if ours.startswith("mm_projector."):
        return PROJECTOR_PREFIX + ours.removeprefix("mm_projector.")
    return {"image_newline": IMAGE_NEWLINE}[ours]


def our_name(official: str) -> str:
    """A LLaDA-V checkpoint name -> our parameter name (KeyError for an unknown one)."""
    if official.startswith(VISION_TOWER_PREFIX):
        return "vision_tower." + official.removeprefix(VISION_TOWER_PREFIX)
    if official.startswith(PROJECTOR_PREFIX):
        return "mm_projector." + official.removeprefix(PROJECTOR_PREFIX)
    if official == IMAGE_NEWLINE:
        return "image_newline"
    lm = olmo_name(official)
    if lm is None:
        raise KeyError(f"not a LLaDA-V weight: {official}")
    return "lm." + lm


def tokenize_with_images(tokenizer, prompt: str) -> list[int]:
    """The official tokenizer_image_token: each text chunk between "<image>" marks tokenized
    on its own, the sentinel IMAGE_TOKEN_INDEX between them (models/llada_v_prompt.py: LLaVA's
    rule included, so the token after each image is lost)."""
    return split_at_images(lambda chunk: tokenizer(chunk).input_ids, prompt,
                           tokenizer.bos_token_id, IMAGE_TOKEN_INDEX)


# The official `llava_llada` conversation's system message, always sent.
SYSTEM_MESSAGE = ("You are a helpful language and vision assistant. You are able to understand "
                  "the visual content that the user provides, and assist the user with a "
                  "variety of tasks using natural language.")


def chat_prompt(tokenizer, question: str, num_images: int) -> str:
    """The official prompt for one user turn: the system message, then one "<image>" per image
    (space-joined) and a newline before the question, through the chat template."""
    marks = " ".join(["<image>"] * num_images)
    content = f"{marks}\n{question}" if num_images else question
    messages = [{"role": "system", "content": SYSTEM_MESSAGE},
                {"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
