"""LLaDA-V's multimodal processor for vLLM: images -> pixel tiles, `<image>` -> placeholders.

LLaDA-V ships no HF processor class, so this is written against vLLM's processing base
classes directly:
  * pixels: `llada_v_image.py` (the official tiles). The layout depends on how many images the
    request holds (one: anyres tiles; several: one padded tile each, as the official
    evaluation does), so `apply` records it as a processor kwarg: it is part of each item's
    cache key, and a cached item is never reused under the other layout;
  * prompt: vLLM's renderer has already tokenized the whole prompt, and `<image>` is no token
    of LLaDA's tokenizer. The official code tokenizes the text between `<image>` marks chunk
    by chunk (and drops the first token after each image: `llada_v_prompt.py`), so the
    prompt is decoded back to its text and tokenized that way, each image's mark becoming
    its tokens' worth of placeholder ids (`IMAGE_PLACEHOLDER`, whose embeddings the runner
    replaces with the image features);
  * a prompt whose `<image>` marks do not match its images, or that outgrows the model's
    `tokenizer_model_max_length`, is refused (ValueError: HTTP 400). The official code
    truncates the merged prompt silently; we never truncate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from PIL import Image
from transformers import BatchFeature

from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import ImageProcessorItems
from vllm.multimodal.processing import (BaseDummyInputsBuilder, BaseMultiModalProcessor,
                                        BaseProcessingInfo, PromptReplacement)
from vllm.multimodal.processing.processor import PlaceholderFeaturesInfo

from vllm_elastic.models.llada_v_grid import max_image_tokens, num_image_tokens
from vllm_elastic.models.llada_v_image import image_mode, image_tiles
from vllm_elastic.models.llada_v_prompt import IMAGE_MARK, IMAGE_PLACEHOLDER, split_at_images

LAYOUT_KWARG = "image_layout"  # the processor kwarg that carries the request's image layout
_IMAGE = -1  # where an image goes, while the prompt is re-tokenized


class LLaDAVProcessingInfo(BaseProcessingInfo):
    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None}

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]
                                   ) -> Mapping[str, int]:
        return {"image": max_image_tokens(self.get_hf_config())}

    def placeholder_id(self) -> int:
        return self.get_tokenizer().convert_tokens_to_ids(IMAGE_PLACEHOLDER)


class LLaDAVDummyInputs(BaseDummyInputsBuilder[LLaDAVProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return (IMAGE_MARK + "\n") * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options=None):
        tile = self.info.get_hf_config().tile_size()
        return {"image": [Image.new("RGB", (tile, tile))] * mm_counts.get("image", 0)}


class LLaDAVProcessor(BaseMultiModalProcessor[LLaDAVProcessingInfo]):
    def apply(self, inputs, timing_ctx):
        count = inputs.mm_data_items.get_all_counts().get("image", 0)
        layout = image_mode(self.info.get_hf_config(), max(count, 1))
        kwargs = {**inputs.hf_processor_mm_kwargs, LAYOUT_KWARG: layout}
        return super().apply(dataclasses.replace(inputs, hf_processor_mm_kwargs=kwargs),
                             timing_ctx)

    def _call_hf_processor(self, hf_data: Mapping[str, object],
                           hf_kwargs: Mapping[str, object]) -> BatchFeature:
        config = self.info.get_hf_config()
        images = [im.convert("RGB") if im.mode != "RGB" else im for im in hf_data["images"]]
        tiles = [image_tiles(im, config, hf_kwargs[LAYOUT_KWARG]) for im in images]
        return BatchFeature({"pixel_values": torch.cat(tiles),
                             "image_sizes": torch.tensor([im.size for im in images]),
                             "num_tiles": torch.tensor([t.shape[0] for t in tiles])})

    def _get_mm_fields_config(self, hf_inputs: BatchFeature,
                              hf_processor_mm_kwargs: Mapping[str, object]
                              ) -> Mapping[str, MultiModalFieldConfig]:
        tiles = hf_inputs.get("num_tiles", torch.empty(0, dtype=torch.long))
        return {"pixel_values": MultiModalFieldConfig.flat_from_sizes("image", tiles),
                "image_sizes": MultiModalFieldConfig.batched("image", keep_on_cpu=True),
                "num_tiles": MultiModalFieldConfig.batched("image", keep_on_cpu=True)}

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs
                            ) -> Sequence[PromptReplacement]:
        config, placeholder = self.info.get_hf_config(), self.info.placeholder_id()
        layout = hf_processor_mm_kwargs[LAYOUT_KWARG]

        def tokens(i: int) -> list[int]:
            size = mm_items.get_items("image", ImageProcessorItems).get_image_size(i)
            return [placeholder] * num_image_tokens((size.width, size.height), config, layout)

        # The target is not searched for: _apply_prompt_updates places the tokens itself.
        return [PromptReplacement(modality="image", target=[placeholder], replacement=tokens)]

    def _apply_prompt_updates(self, token_ids: list[int], mm_prompt_updates):
        """The official chunked tokenization; each image's mark -> its placeholder tokens."""
        tokenizer = self.info.get_tokenizer()
        text = tokenizer.decode(token_ids, skip_special_tokens=False)
        ids = split_at_images(lambda chunk: tokenizer(chunk).input_ids, text,
                              tokenizer.bos_token_id, _IMAGE)
        updates = mm_prompt_updates.get("image", [])
        marks = ids.count(_IMAGE)
        if marks != len(updates):
            raise ValueError(f"the prompt holds {marks} {IMAGE_MARK} mark(s) for "
                             f"{len(updates)} image(s): put one {IMAGE_MARK} where each image "
                             "goes (chat messages do it for you)")
        out: list[int] = []
        placeholders = []
        for token in ids:
            if token != _IMAGE:
                out.append(token)
                continue
            update = updates[len(placeholders)][0]
            placeholders.append(PlaceholderFeaturesInfo("image", update.item_idx, len(out),
                                                        update.content.full, None))
            out += update.content.full
        limit = self.info.get_hf_config().tokenizer_model_max_length
        if limit is not None and len(out) > limit:
            raise ValueError(f"the prompt with its images is {len(out)} tokens, more than the "
                             f"model's tokenizer_model_max_length {limit}")
        return out, ({"image": placeholders} if placeholders else {})
