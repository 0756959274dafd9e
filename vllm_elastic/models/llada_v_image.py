"""LLaDA-V's image preprocessing: PIL images -> pixel tiles, as the official code does it.

Followed line by line from ML-GSAI/LLaDA-V (`llava/mm_utils.py` and the SigLipImageProcessor of
`siglip_encoder.py`), because the tile layout decides the token count and any difference in
resizing or padding changes the features:
  * every tile: RGB, bicubic resize to the tower's square size ignoring aspect, x/255,
    normalised with mean = std = 0.5, channels first;
  * one image under `anyres*`: a base tile (the whole image squashed to a tile), then the
    image resized into the best grid resolution (aspect kept, `ceil` on the scaled side,
    pasted centred on black) cut into row-major tiles;
  * several images (the official evaluation switches to `pad` then) or `pad`: the image
    centred on a square of colour 127 (mean x 255), one tile;
  * any other ratio (`square`, none): one tile of the whole image squashed.
Image sizes are PIL's (width, height) throughout, as the official code passes them.
"""

from __future__ import annotations

import math
from functools import reduce

import torch
from PIL import Image

from vllm_elastic.models.llada_v_config import LlavaLLaDAConfig

MEAN = STD = (0.5, 0.5, 0.5)


def image_mode(config: LlavaLLaDAConfig, num_images: int) -> str:
    """How a request's images are laid out: "anyres" (tiles + unpadding, one image only),
    "pad" or "square" (one tile per image)."""
    ratio = config.image_aspect_ratio or "square"
    if ratio.startswith("anyres"):
        if "unpad" not in config.mm_patch_merge_type:
            raise ValueError(f"LLaDA-V config: mm_patch_merge_type "
                             f"{config.mm_patch_merge_type!r} with image_aspect_ratio {ratio!r} "
                             "is not supported (only 'spatial_unpad')")
        return "anyres" if num_images == 1 else "pad"
    return "pad" if ratio == "pad" else "square"


def preprocess_tile(image: Image.Image, size: int) -> torch.Tensor:
    """One tile's pixel values [3, size, size] (the official SigLipImageProcessor chain)."""
    from transformers.image_transforms import (convert_to_rgb, normalize, rescale, resize,
                                               to_channel_dimension_format)
    from transformers.image_utils import ChannelDimension, PILImageResampling, to_numpy_array

    first = ChannelDimension.FIRST
    steps = [
        convert_to_rgb,
        to_numpy_array,
        lambda x: resize(x, size=(size, size), resample=PILImageResampling.BICUBIC,
                         data_format=first),
        lambda x: rescale(x, scale=1 / 255, data_format=first),
        lambda x: normalize(x, mean=MEAN, std=STD, data_format=first),
        lambda x: to_channel_dimension_format(x, first, input_channel_dim=first),
    ]
    return torch.from_numpy(reduce(lambda x, f: f(x), steps, image).copy())


def select_best_resolution(size: tuple[int, int],
                           resolutions: list[tuple[int, int]]) -> tuple[int, int]:
    """The (w, h) that keeps the most of the image when it is scaled into it, ties to the
    least wasted area, then the first listed."""
    width, height = size
    best, best_effective, best_waste = None, 0, float("inf")
    for w, h in resolutions:
        scale = min(w / width, h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        waste = w * h - effective
        if effective > best_effective or (effective == best_effective and waste < best_waste):
            best, best_effective, best_waste = (w, h), effective, waste
    return best


def resize_and_pad(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Aspect-preserving resize into `target` (w, h), centred on black."""
    width, height = image.size
    tw, th = target
    if tw / width < th / height:
        new_w, new_h = tw, min(math.ceil(height * tw / width), th)
    else:
        new_w, new_h = min(math.ceil(width * th / height), tw), th
    canvas = Image.new("RGB", (tw, th), (0, 0, 0))
    canvas.paste(image.resize((new_w, new_h)), ((tw - new_w) // 2, (th - new_h) // 2))
    return canvas


def divide_to_tiles(image: Image.Image, tile: int) -> list[Image.Image]:
    width, height = image.size
    return [image.crop((x, y, x + tile, y + tile))
            for y in range(0, height, tile) for x in range(0, width, tile)]


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def image_tiles(image: Image.Image, config: LlavaLLaDAConfig, mode: str) -> torch.Tensor:
    """One image's pixel tiles [tiles, 3, S, S] under `mode` (see image_mode)."""
    tile = config.tile_size()
    if mode == "anyres":
        best = select_best_resolution(image.size, config.grid_pinpoints())
        crops = [image.resize((tile, tile))] + divide_to_tiles(resize_and_pad(image, best), tile)
    elif mode == "pad":
        crops = [expand_to_square(image, tuple(int(m * 255) for m in MEAN))]
    else:
        crops = [image]
    return torch.stack([preprocess_tile(c, tile) for c in crops])


def preprocess_images(images: list[Image.Image], config: LlavaLLaDAConfig
                      ) -> tuple[list[torch.Tensor], str]:
    """Every image of one request as pixel tiles, and the layout mode they were made for."""
    mode = image_mode(config, len(images))
    return [image_tiles(im, config, mode) for im in images], mode
