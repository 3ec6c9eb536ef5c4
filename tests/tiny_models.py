"""Tiny random-weight models of the native profile's architectures, saved as local model folders.

Each builder writes a folder with ``config.json``, weights, tokenizer and processor files made offline (a word
level tokenizer from the ``tokenizers`` library, image/audio processors from keyword arguments), so tests run
the native backends' real loading path (``from_pretrained(folder)``) without any download. Models are 1 layer,
hidden size 32: they build in well under a second and carry no meaning, only shapes and plumbing.
"""

from __future__ import annotations

from pathlib import Path

from loupe.embedder.random_models import (
    BERT_SPECIAL,
    BERT_TOKENS,
    VOCAB,
    WORDS,
    clap_folder,
    siglip_folder,
    word_tokenizer,
)

QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
TOWER = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}


def build_siglip(folder: Path) -> Path:
    """A 1-layer SigLIP (text 16 tokens, 32x32 images) with its processor, saved to ``folder``."""
    text = {**TOWER, "vocab_size": VOCAB, "max_position_embeddings": 16}
    return siglip_folder(folder, text=text, vision={**TOWER, "image_size": 32, "patch_size": 8}, text_length=16)


def build_clip(folder: Path) -> Path:
    """A 1-layer CLIP (projection 24) with its processor, saved to ``folder``."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    text = {**TOWER, "vocab_size": VOCAB, "max_position_embeddings": 16, "bos_token_id": 2, "eos_token_id": 3}
    cfg = CLIPConfig(
        text_config={**text, "pad_token_id": 0},
        vision_config={**TOWER, "image_size": 32, "patch_size": 8},
        projection_dim=24,
    )
    CLIPModel(cfg).save_pretrained(folder)
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=word_tokenizer(BERT_SPECIAL, 16, **BERT_TOKENS)).save_pretrained(
        folder
    )
    return folder


def build_clap(folder: Path) -> Path:
    """A tiny CLAP (HTSAT audio tower, 16 mel bins, 2-s windows at 48 kHz; projection 24), saved to ``folder``."""
    audio = {
        "hidden_size": 32,
        "depths": [1, 1],
        "num_attention_heads": [2, 2],
        "patch_embeds_hidden_size": 16,
        "window_size": 4,
        "spec_size": 64,
        "num_mel_bins": 16,
        "patch_stride": [4, 4],
        "patch_size": 4,
        "enable_fusion": False,
    }
    text = {**TOWER, "vocab_size": VOCAB + 2, "max_position_embeddings": 40, "pad_token_id": 0}
    return clap_folder(folder, text=text, audio=audio, projection_dim=24, window_s=2, text_length=32)


def build_qwen3_vl(folder: Path) -> Path:
    """A 1-layer Qwen3-VL (text hidden 32, 8-px patches) with tokenizer and image processor, saved to ``folder``."""
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLConfig, Qwen3VLModel

    special = [*QWEN_SPECIAL, "[UNK]"]
    ids = {t: i for i, t in enumerate(special)}
    cfg = Qwen3VLConfig(
        text_config={
            "vocab_size": len(special) + len(WORDS),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "pad_token_id": 0,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 8,
            "out_hidden_size": 32,
            "num_position_embeddings": 16,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    Qwen3VLModel(cfg).save_pretrained(folder)
    tok = word_tokenizer(special, 512, pad_token="<|endoftext|>", unk_token="[UNK]", eos_token="<|im_end|>")
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL})
    tok.save_pretrained(folder)
    Qwen2VLImageProcessorPil(
        patch_size=8, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64}
    ).save_pretrained(folder)
    return folder


def build_all(root: Path) -> dict[str, Path]:
    """Every tiny architecture in its own folder under ``root`` (keys: siglip, clip, clap, qwen3vl)."""
    return {
        "siglip": build_siglip(root / "siglip"),
        "clip": build_clip(root / "clip"),
        "clap": build_clap(root / "clap"),
        "qwen3vl": build_qwen3_vl(root / "qwen3vl"),
    }


def build_embeddinggemma2(folder: Path, *, audio: bool = True) -> Path:
    """A tiny EmbeddingGemma 2 with every tower: text backbone (2 layers, width 32: one sliding-window and one
    full-attention layer, the real model's two kinds), a 1-layer Gemma 4 vision tower and a 1-layer Gemma 4 audio
    conformer; 768-d output so the real Matryoshka sizes apply. Built from configs, saved with tokenizer and
    processor settings (embedder/random_models.py)."""
    from loupe.embedder.random_models import embeddinggemma2_folder

    text = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "global_head_dim": 16,
        "hidden_size_per_layer_input": 8,
        "sliding_window": 8,
        "layer_types": ["sliding_attention", "full_attention"],
        "max_position_embeddings": 4096,
        "embedding_dim": 768,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "position_embedding_size": 256,
    }
    # The subsampler's first width must be the feature extractor's 128 mel bins (its projection assumes it).
    sound = {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "subsampling_conv_channels": [128, 4],
        "output_proj_dims": 24,
    }
    return embeddinggemma2_folder(folder, text=text, vision=vision, audio=sound if audio else None)
