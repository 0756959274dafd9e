"""LLaDA-V: config, checkpoint layout, image preprocessing and feature layout, the plain-PyTorch
oracle's splice and decoding. No vLLM engine here; the tiny checkpoint's tower has 56 px tiles
of 4 x 4 patches (the official 384 px / 27 x 27 are checked through the token counts)."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch

from helpers import make_llada_v_checkpoint, picture
from vllm_elastic.models.llada_v_config import IMAGE_TOKEN_INDEX, LlavaLLaDAConfig
from vllm_elastic.models.llada_v_grid import grid_shape, merge_image_features, num_image_tokens
from vllm_elastic.models.llada_v_image import image_tiles, preprocess_tile
from vllm_elastic.models.llama_names import olmo_name
from vllm_elastic.oracles.llada import ReferenceLLaDA, generate, load_safetensors_dir
from vllm_elastic.oracles.llada_v import ReferenceLLaDAV, chat_prompt, tokenize_with_images
from vllm_elastic.oracles.llada_v_generate import generate_with_embeds, update_stop
from vllm_elastic.params import DiffusionParams
from vllm_elastic.tools.llada_v_checkpoint import EOT_ID


@pytest.fixture(scope="module")
def llada_v_dir(tmp_path_factory) -> str:
    return make_llada_v_checkpoint(str(tmp_path_factory.mktemp("tiny-llada-v")))


@pytest.fixture(scope="module")
def model(llada_v_dir) -> ReferenceLLaDAV:
    return ReferenceLLaDAV.from_pretrained(llada_v_dir)


@pytest.fixture(scope="module")
def tok(llada_v_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llada_v_dir)


def test_official_config_defaults_build_the_so400m_tower():
    config = LlavaLLaDAConfig()  # a released config.json holds no vision config
    tower = config.vision_tower_config()
    assert (tower.hidden_size, tower.num_hidden_layers, tower.num_attention_heads,
            tower.intermediate_size) == (1152, 27, 16, 4304)
    assert (config.tile_size(), config.patches_per_side()) == (384, 27)
    pinpoints = config.grid_pinpoints()  # "(1x1),...,(6x6)": i outer, j inner, x 384
    assert len(pinpoints) == 36 and pinpoints[:2] == [(384, 384), (384, 768)]
    assert pinpoints[-1] == (2304, 2304)
    with pytest.raises(ValueError, match="mm_hidden_size"):
        LlavaLLaDAConfig(mm_hidden_size=1024)


def test_config_loads_without_remote_code(llada_v_dir):
    from transformers import AutoConfig
    from vllm.transformers_utils.config import _CONFIG_REGISTRY

    from vllm_elastic.integration.patches import register_configs

    config = AutoConfig.from_pretrained(llada_v_dir)
    assert isinstance(config, LlavaLLaDAConfig) and config.model_type == "llava_llada"
    assert config.architectures == ["LlavaLLaDAModelLM"] and "auto_map" not in config.to_dict()
    register_configs()
    assert _CONFIG_REGISTRY["llava_llada"] is LlavaLLaDAConfig


def test_checkpoint_has_the_official_names_and_drops_the_last_tower_layer(llada_v_dir, tok):
    names = set(load_safetensors_dir(llada_v_dir))
    assert {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
            "model.layers.1.self_attn.o_proj.weight", "model.layers.0.mlp.gate_proj.weight",
            "model.layers.0.post_attention_layernorm.weight", "model.image_newline",
            "model.mm_projector.0.weight", "model.mm_projector.2.bias"} <= names
    assert not any(n.startswith("model.transformer.") for n in names)
    tower = "model.vision_tower.vision_tower.vision_model."
    layers = {int(n[len(tower):].split(".")[2]) for n in names
              if n.startswith(tower + "encoder.layers.")}
    config = json.load(open(os.path.join(llada_v_dir, "config.json")))
    assert layers == set(range(config["vision_config"]["num_hidden_layers"] - 1))
    assert tower + "post_layernorm.weight" in names and not any(".head." in n for n in names)
    ids = tok.convert_tokens_to_ids(["<|endoftext|>", "<|mdm_mask|>", "<|eot_id|>"])
    assert ids == [config["eos_token_id"], config["mask_token_id"], config["eot_token_id"]]
    assert config["sampled_vocab_size"] == len(tok) < config["vocab_size"]
    prompt = tok.apply_chat_template([{"role": "user", "content": " hi "}], tokenize=False)
    assert prompt == ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n")
    pre = json.load(open(os.path.join(llada_v_dir, "preprocessor_config.json")))
    assert pre["size"] == {"height": 56, "width": 56} and pre["image_mean"] == [0.5] * 3


# (width, height) -> (grid columns, rows), tokens; worked by hand from the official rules
# for 56 px tiles of 4 x 4 features (16 base tokens + rows x (cols + 1)).
GRIDS = {(56, 56): ((1, 1), 36), (112, 56): ((2, 1), 52), (100, 60): ((2, 2), 52),
         (60, 130): ((2, 3), 100), (336, 336): ((6, 6), 88), (10, 10): ((1, 1), 36)}


@pytest.mark.parametrize("size", sorted(GRIDS))
def test_anyres_grid_and_token_count(model, size):
    (cols, rows), tokens = GRIDS[size]
    config = model.config
    assert grid_shape(size, config) == (cols, rows)
    assert num_image_tokens(size, config, "anyres") == tokens
    tiles = image_tiles(picture(*size), config, "anyres")
    assert tiles.shape == (1 + cols * rows, 3, 56, 56)
    with torch.no_grad():
        merged = merge_image_features(model.encode_tiles(tiles), size, config, "anyres",
                                      model.image_newline)
    assert merged.shape == (tokens, config.hidden_size)
    # The base tile first, then a newline closing each row of the (unpadded) grid map.
    newline_rows = (merged == model.image_newline).all(-1).nonzero()[:, 0].tolist()
    width = (tokens - 16) // len(newline_rows)
    assert newline_rows == [16 + width * (r + 1) - 1 for r in range(len(newline_rows))]


def test_official_token_counts_for_384_px_tiles():
    config = LlavaLLaDAConfig()
    counts = {size: num_image_tokens(size, config, "anyres")
              for size in [(384, 384), (640, 480), (1024, 768), (1920, 1080), (10, 10)]}
    assert counts == {(384, 384): 1485, (640, 480): 2929, (1024, 768): 3627,
                      (1920, 1080): 3649, (10, 10): 1485}
    assert num_image_tokens((640, 480), config, "pad") == 729


def test_tiles_are_normalised_and_pad_fills_with_the_mean(model):
    image = picture(56, 28)
    base = image_tiles(image, model.config, "anyres")[0]
    assert torch.equal(base, preprocess_tile(image.resize((56, 56)), 56))
    assert base.min() >= -1 and base.max() <= 1
    padded = image_tiles(image, model.config, "pad")
    assert padded.shape == (1, 3, 56, 56)
    assert torch.allclose(padded[0, :, :14], torch.tensor((127 / 255 - 0.5) / 0.5))


def test_tower_reads_the_released_towers_penultimate_layer(model):
    """Our tower is the released one minus its last layer: its output is the full tower's
    second-to-last hidden state (before post_layernorm), as the official features are."""
    from transformers import SiglipVisionModel

    full = SiglipVisionModel(model.config.vision_tower_config())
    missing = full.load_state_dict(model.vision_tower.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("encoder.layers.2.") for k in missing)
    tiles = image_tiles(picture(70, 90), model.config, "anyres")
    with torch.no_grad():
        hidden = full(pixel_values=tiles, output_hidden_states=True).hidden_states[-2]
        assert torch.allclose(model.encode_tiles(tiles), model.mm_projector(hidden), atol=1e-5)


def test_splice_puts_each_image_at_its_placeholder(model, tok):
    images = [picture(60, 130, 1), picture(80, 40, 2)]
    prompt = chat_prompt(tok, "Compare them.", len(images))
    ids = tokenize_with_images(tok, prompt)
    marks = [i for i, t in enumerate(ids) if t == IMAGE_TOKEN_INDEX]
    assert len(marks) == 2 and marks[1] == marks[0] + 1  # "<image> <image>": the space dropped
    # The official rule drops each chunk's first token when the prompt starts with BOS: the
    # "\n" after the images is lost (prompt text "<image> <image>\nCompare").
    assert "<image> <image>\nCompare" in prompt
    assert tok.decode(ids[marks[1] + 1:]).startswith("Compare")
    features = model.image_features(images)  # two images: "pad", 16 tokens each, no newline
    assert [f.shape[0] for f in features] == [16, 16]
    with torch.no_grad():
        embeds = model.prompt_embeds(ids, images)
        text = model.embed_tokens(torch.tensor([t for t in ids if t != IMAGE_TOKEN_INDEX]))
    assert embeds.shape[0] == len(ids) - 2 + 32
    first, second = marks[0], marks[0] + 16
    assert torch.equal(embeds[first: first + 16], features[0])
    assert torch.equal(embeds[second: second + 16], features[1])
    assert torch.equal(embeds[:first], text[:first])
    assert torch.equal(embeds[second + 16:], text[first:])


def test_text_only_is_our_llada_on_the_same_weights(model, llada_v_dir, tmp_path):
    """The LM written under Llama names and read back as an OLMo-named LLaDA checkpoint gives
    the same logits, and without LLaDA-V's decoding rules the same answers as LLaDA's oracle."""
    from safetensors.torch import save_file

    lm_state = {olmo_name(k): v for k, v in load_safetensors_dir(llada_v_dir).items()
                if olmo_name(k)}
    model.config.as_llada_config().save_pretrained(tmp_path)
    save_file(lm_state, os.path.join(tmp_path, "model.safetensors"))
    llada = ReferenceLLaDA.from_pretrained(str(tmp_path))
    ids = [2, 3, 40, 41, 42, 4, 204, 204]
    with torch.no_grad():
        assert torch.allclose(model.logits(model.prompt_embeds(ids)),
                              llada(torch.tensor([ids]))[0], atol=1e-5)
    plain = copy.copy(model)
    plain.config = copy.deepcopy(model.config)
    plain.config.suppressed_token_ids, plain.config.sampled_vocab_size = [], None
    for params in (DiffusionParams(gen_length=16, block_length=8, steps=8),
                   DiffusionParams(gen_length=16, block_length=8, temperature=1.0, seed=3)):
        ours = generate_with_embeds(plain, plain.prompt_embeds(ids), params, stops=[])
        assert ours == generate(llada, ids, params)


def test_decoding_stops_at_eot_and_never_emits_the_forbidden_ids(model, tok):
    params = DiffusionParams(gen_length=16, block_length=8, steps=8)
    answers = []
    for seed, question in enumerate(["What is in the image?", "The digits are", "Hello"] * 2):
        ids = tokenize_with_images(tok, chat_prompt(tok, question, 1))
        embeds = model.prompt_embeds(ids, [picture(40 + 30 * seed, 50, seed)])
        answers.append(generate_with_embeds(model, embeds, params))
        assert answers[-1] == generate_with_embeds(model, embeds, params)  # deterministic
    config = model.config
    forbidden = set(config.suppressed_token_ids) | {config.mask_token_id, EOT_ID}
    assert all(not forbidden & set(a) and max(a, default=0) < config.sampled_vocab_size
               for a in answers)
    assert any(len(a) < 16 for a in answers), "no answer stopped at <|eot_id|>"
    assert len({tuple(a) for a in answers}) > 1  # the image changes the answer


def test_seeded_sampling_is_reproducible(model, tok):
    embeds = model.prompt_embeds(tokenize_with_images(tok, chat_prompt(tok, "Hello", 1)),
                                 [picture(90, 60)])
    def sampled(seed):
        return generate_with_embeds(model, embeds, DiffusionParams(
            gen_length=16, block_length=8, steps=8, temperature=1.0, seed=seed))
    assert sampled(1) == sampled(1) and sampled(1) != sampled(2)


def test_stop_scan_follows_the_official_order():
    tokens = torch.tensor([5, 7, 9, 5])
    assert update_stop(tokens, [[9], [7]], None) == 2  # the first sequence found ends the scan
    assert update_stop(tokens, [[4], [7, 9]], None) == 1
    assert update_stop(tokens, [[5]], 3) == 0  # a stop only moves earlier
    assert update_stop(tokens, [[9]], 1) == 1


def test_llama_named_llada_loads_through_the_llada_loader(tmp_path):
    """LLaDA-8B-Instruct-HF (the rename LLaDA-V was trained from): Llama field names read by
    our LLaDA config, Llama weight names mapped onto the same parameters."""
    from helpers import make_checkpoint
    from vllm_elastic.models.llada import map_any_checkpoint_name, map_checkpoint_name
    from vllm_elastic.models.llada_config import LLaDAConfig
    from vllm_elastic.models.llama_names import llama_name

    names = list(load_safetensors_dir(make_checkpoint(str(tmp_path / "llada"))))
    for name in names:
        assert map_any_checkpoint_name(llama_name(name)) == map_checkpoint_name(name), name
        assert map_any_checkpoint_name(name) == map_checkpoint_name(name)
    config = LLaDAConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=96,
                         max_position_embeddings=512)
    assert (config.d_model, config.n_layers, config.n_heads, config.n_kv_heads,
            config.mlp_hidden_size, config.max_sequence_length) == (64, 3, 2, 1, 96, 512)
