"""Random-weight models of the native profile's architectures, saved as local model folders, built offline.

Two uses, neither of which may download anything: the tests load *tiny* ones (1 layer, hidden 32) through the
real ``from_pretrained(folder)`` path, and ``loupe bench native`` times *base-sized* ones (SigLIP base
patch16-224, CLAP HTSAT, as transformers' default configs are), whose cost per item is that of the real
checkpoints of the same shape. The weights mean nothing; the tokenizers are word-level over a few words (others
map to the unknown token), and the processors are built from keyword arguments.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

WORDS = "a photo of dog cat hammer the sound sirens rain music speech represent input user system assistant".split()
BERT_SPECIAL = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
BERT_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[BOS]", "eos_token": "[EOS]"}
VOCAB = len(BERT_SPECIAL) + len(WORDS)


@contextmanager
def seeded_init(seed: int = 0) -> Iterator[None]:
    """Initialise weights from a fixed seed without touching the caller's random state: the same folder comes out
    of every build, so a test on a tiny model reads the same numbers on every machine and every run (an unseeded
    init once put an interleaved input within cosine 0.9997 of its picture on one CI run in many)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


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
    with seeded_init():
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
    with seeded_init():
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


# EmbeddingGemma 2's placeholder and bracket tokens (names as in this folder's tokenizer; a real checkpoint's
# tokenizer names its own, and the backend reads them from the tokenizer, not from here).
GEMMA2_MEDIA_TOKENS = {
    "image_token": "<|image|>",
    "boi_token": "<|image>",
    "eoi_token": "<image|>",
    "audio_token": "<|audio|>",
    "boa_token": "<|audio>",
    "eoa_token": "<audio|>",
}
GEMMA2_VIDEO_TOKEN = "<|video|>"  # the processor's own video placeholder (processing_embedding_gemma2.py)
GEMMA2_SPECIAL = ["<pad>", "<unk>", "<bos>", "<eos>", *GEMMA2_MEDIA_TOKENS.values(), GEMMA2_VIDEO_TOKEN]


def embeddinggemma2_folder(
    folder: Path,
    text: dict[str, Any],
    vision: dict[str, Any] | None,
    audio: dict[str, Any] | None,
    *,
    image_soft_tokens: int = 70,
    video_soft_tokens: int = 70,
) -> Path:
    """An EmbeddingGemma 2 (text backbone + Gemma 4 vision and audio towers) with tokenizer, image processor,
    audio feature extractor and video processor settings, saved to ``folder`` as transformers 5 lays a
    checkpoint out (``processor_config.json`` holds the sub-processors' settings).

    The video processor's settings are written as data: its class needs torchvision, which Loupe keeps out.
    """
    import json

    from transformers import EmbeddingGemma2Config, EmbeddingGemma2Model, PreTrainedTokenizerFast
    from transformers.models.gemma4 import Gemma4AudioFeatureExtractor, Gemma4ImageProcessorPil

    base = word_tokenizer(GEMMA2_SPECIAL, 4096, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=base.backend_tokenizer,
        model_max_length=4096,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        extra_special_tokens=dict(GEMMA2_MEDIA_TOKENS),
    )
    # A special token, as the processor registers it (otherwise tokenizers that read tokenizer.json split it).
    tok.add_special_tokens({"additional_special_tokens": [GEMMA2_VIDEO_TOKEN]})
    # One token in, one id out (the stubs also allow a list of tokens, hence the cast).
    ids = {t: cast(int, tok.convert_tokens_to_ids(t)) for t in GEMMA2_SPECIAL}
    cfg: Any = EmbeddingGemma2Config(
        text_config={"vocab_size": len(GEMMA2_SPECIAL) + len(WORDS), "pad_token_id": 0, **text},
        vision_config={"model_type": "gemma4_vision", **vision} if vision is not None else None,
        audio_config={"model_type": "gemma4_audio", **audio} if audio is not None else None,
        image_token_id=ids["<|image|>"],
        boi_token_id=ids["<|image>"],
        eoi_token_id=ids["<image|>"],
        audio_token_id=ids["<|audio|>"],
        boa_token_id=ids["<|audio>"],
        eoa_token_index=ids["<audio|>"],
        video_token_id=ids[GEMMA2_VIDEO_TOKEN],
    )
    with seeded_init():
        EmbeddingGemma2Model(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    images = Gemma4ImageProcessorPil(max_soft_tokens=image_soft_tokens).to_dict()
    sounds = Gemma4AudioFeatureExtractor().to_dict()
    # The defaults of transformers' EmbeddingGemma2VideoProcessor (1 FPS, at most 32 frames, identity mean/std).
    video = {
        "video_processor_type": "EmbeddingGemma2VideoProcessor",
        "patch_size": 16,
        "pooling_kernel_size": 3,
        "max_soft_tokens": video_soft_tokens,
        "fps": 1,
        "max_frames": 32,
        "overflow_strategy": "uniform",
        "add_timestamps": False,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.0, 0.0, 0.0],
        "image_std": [1.0, 1.0, 1.0],
    }
    processor = {
        "processor_class": "EmbeddingGemma2Processor",
        "image_processor": images,
        "feature_extractor": sounds,
        "video_processor": video,
        "image_seq_length": image_soft_tokens,
        "audio_seq_length": 750,
        "audio_ms_per_token": 40,
    }
    (folder / "processor_config.json").write_text(json.dumps(processor, indent=2, default=_plain))
    # The sentence-transformers files of the checkpoint's layout: EmbeddingGemma's retrieval prompts under the
    # names EmbeddingGemma 2 uses, and mean pooling + normalisation (the egemma2 runtime reads the first file).
    prompts = {"SearchQuery": "task: search result | query: ", "Document": "title: none | text: "}
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"}, indent=2)
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling = {"word_embedding_dimension": int(cfg.text_config.embedding_dim), "pooling_mode_mean_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    return folder


def _plain(value: Any) -> Any:
    """numpy values (the feature extractor's settings hold a few) as JSON numbers and lists."""
    import numpy as np

    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to processor_config.json")


def embeddinggemma2_base(folder: Path) -> Path:
    """EmbeddingGemma 2's shapes as transformers' default configs give them (text backbone 24 layers, width 512,
    768-d output; Gemma 4 vision tower 16 layers, width 768; Gemma 4 audio conformer 12 layers, width 1024), with
    random weights and a word-level vocabulary instead of the 262k-token one (the lookup costs nothing per item;
    the full table would add ~134 M parameters to build for nothing)."""
    return embeddinggemma2_folder(folder, text={}, vision={}, audio={}, image_soft_tokens=280)
