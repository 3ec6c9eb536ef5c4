"""Random-weight models of the native profile's architectures, saved as local model folders, built offline.

Two uses, neither of which may download anything: the tests load *tiny* ones (1 layer, hidden 32) through the
real ``from_pretrained(folder)`` path, and ``loupe bench native`` times *base-sized* ones (SigLIP base
patch16-224, CLAP HTSAT, as transformers' default configs are), whose cost per item is that of the real
checkpoints of the same shape. The weights mean nothing; the tokenizers are word-level over a few words (others
map to the unknown token), and the processors are built from keyword arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WORDS = "a photo of dog cat hammer the sound sirens rain music speech represent input user system assistant".split()
BERT_SPECIAL = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
BERT_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[BOS]", "eos_token": "[EOS]"}
VOCAB = len(BERT_SPECIAL) + len(WORDS)


def word_tokenizer(special: list[str], max_length: int, **tokens: str) -> Any:
    """A fast word-level tokenizer over ``special + WORDS`` (built with the ``tokenizers`` library, no files)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate([*special, *WORDS])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token=tokens.get("unk_token", special[1])))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, model_max_length=max_length, **tokens)


def siglip_folder(folder: Path, text: dict[str, Any], vision: dict[str, Any], text_length: int) -> Path:
    """A SigLIP model with ``text``/``vision`` tower configs and its processor (images resized to the vision
    config's size), saved to ``folder``."""
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel, SiglipProcessor

    cfg: Any = SiglipConfig(text_config=text, vision_config=vision)
    SiglipModel(cfg).save_pretrained(folder)
    side = int(cfg.vision_config.image_size)
    SiglipProcessor(
        image_processor=SiglipImageProcessorPil(size={"height": side, "width": side}),
        tokenizer=word_tokenizer(BERT_SPECIAL, text_length, **BERT_TOKENS),
    ).save_pretrained(folder)
    return folder


def clap_folder(
    folder: Path, text: dict[str, Any], audio: dict[str, Any], projection_dim: int, window_s: int, text_length: int
) -> Path:
    """A CLAP model (HTSAT audio tower) with its processor (48 kHz, ``window_s``-second windows), saved to
    ``folder``."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    cfg: Any = ClapConfig(text_config=text, audio_config=audio, projection_dim=projection_dim)
    ClapModel(cfg).save_pretrained(folder)
    fe = ClapFeatureExtractor(
        feature_size=int(cfg.audio_config.num_mel_bins),
        sampling_rate=48_000,
        max_length_s=window_s,
        truncation="rand_trunc",
    )
    ClapProcessor(
        feature_extractor=fe, tokenizer=word_tokenizer(BERT_SPECIAL, text_length, **BERT_TOKENS)
    ).save_pretrained(folder)
    return folder


def siglip_base(folder: Path) -> Path:
    """SigLIP base patch16-224's shapes (transformers' default SigLIP config: 12 + 12 layers, width 768;
    ~203 M parameters), random weights."""
    return siglip_folder(folder, text={}, vision={}, text_length=64)


def clap_htsat(folder: Path) -> Path:
    """CLAP HTSAT-unfused's shapes (transformers' default CLAP config: HTSAT audio tower, RoBERTa-base text tower,
    projection 512; 10-s windows at 48 kHz), random weights."""
    return clap_folder(
        folder, text={}, audio={"enable_fusion": False}, projection_dim=512, window_s=10, text_length=512
    )
