"""Sparse e5 word-piece vectors: the keyword half of a spoken query's hybrid search.

A typed query is searched dense + BM25 (index/store.py). A spoken query has no words to give BM25, but the speech
head's soft tokens (embedder/speech.py) are distributions over e5 word pieces, trained so that their mean matches
the spoken sentence's piece histogram (the bag loss, lab/training/speech.py). Summed over time they are the
recording's expected piece counts: a sparse vector over e5's vocabulary, in one forward pass and without decoding
a transcript. Stored text gets the matching vector, its own piece counts with BM25's saturation; the collection's
``pieces`` sparse vector applies IDF (Qdrant's ``Modifier.IDF``), as for BM25.

On the spoken dev set (84 queries) adding this stage to the dense speech vector lifted R@5 from 0.357 to 0.524
and MRR@10 from 0.242 to 0.407 at one speed (0.583 / 0.495 with the query heard at three speeds, its piece
weights square-rooted and head v2.1, against 0.559 / 0.480 for a Whisper transcription cascade; docs/speech.md).

>>> pieces = WordPieces(SpeechEncoder())  # doctest: +SKIP
>>> pieces.document("Call the plumber")  # doctest: +SKIP
([56, 70, 11782, 181719], [1.67, 1.67, 1.67, 1.67])
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from loupe.embedder.base import AudioInput, Role

if TYPE_CHECKING:
    from loupe.embedder.speech import SpeechEncoder

# BM25's term-frequency saturation and length normalisation (Robertson's usual k1 and b); a stored text of
# AVG_LEN pieces (about a 1,000-character chunk) is the length that is neither favoured nor penalised.
K1, B, AVG_LEN = 1.2, 0.75, 256
# A recording keeps the pieces whose summed soft-token mass reaches this (an expected count), and a spoken query
# gives the piece stage this weight in the fusion (dense stage: 1). Chosen on validation recordings ranking the
# 2,200 validation sentences, not on the dev set. 800 recordings, one speed, R@5: dense alone 0.746; mass 0.05 /
# 0.1 / 0.2 / 0.3 at weight 1: 0.834 / 0.831 / 0.828 / 0.823; at mass 0.05, weight 0.5 / 1 / 1.5 / 2: 0.831 /
# 0.834 / 0.841 / 0.843. 480 other recordings heard at three speeds (the product), R@5 / MRR@10 at mass 0.05,
# weight 1 / 2 / 3, query output: 0.871 / 0.824, 0.863 / 0.814, 0.865 / 0.808. The two sets disagree by about a
# point; the weight stays at 2, the value chosen first (and the one the dev-set figures were measured with).
MIN_MASS = 0.05
STAGE_WEIGHT = 2.0
# A spoken query's piece weight is its expected count raised to this power (the stored side keeps its own
# weighting). Expected counts overweight the pieces that a slow word smears over several soft tokens and the
# common pieces said several times; the root flattens them, as BM25 saturates a document's term counts. Chosen on
# the page-level validation set, which holds no dev data (eval/voice/page_validation.py: 284 held-out recordings
# of package synopses and manual-page descriptions, each finding its package or page among 1,865; three speeds,
# weight 2; MRR@10 / R@5): raw counts 0.487 / 0.620, power 0.75 0.505 / 0.641, 0.5 0.524 / 0.669, 0.25 0.528 /
# 0.676 (an exploratory run: the chance of being heard at all, 1 - prod(1 - p), 0.503 / 0.634). On the sentence
# validation (800 recordings, one speed) power 0.5 moved R@5 0.843 -> 0.853 and MRR@10 0.759 -> 0.782.
QUERY_POWER = 0.5

Weights = tuple[list[int], list[float]]


def as_array(weights: Weights) -> np.ndarray:
    """``(2, n)`` float32: piece ids (exact in float32 below 2**24; e5 has 250,002) over their weights. The form in
    which a speech clip's weights travel with its dense vectors, from the profile to the index."""
    return np.asarray(weights, dtype=np.float32).reshape(2, -1)


class WordPieces:
    """Sparse e5 word-piece weights for stored text (:meth:`document`) and for spoken queries (:meth:`spoken`).

    The vocabulary loads on first use from the e5 model file that the offline profile already ships.
    """

    name = "e5-pieces"

    def __init__(self, speech: SpeechEncoder, min_mass: float = MIN_MASS) -> None:
        self.speech = speech
        self.min_mass = float(min_mass)
        self._vocab: Any = None
        self._folded: dict[int, int] = {}
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        """What decides the *stored* vectors: the vocabulary and the weighting. (A spoken query's weights also
        depend on the speech head, whose digest is in the unified model id.)"""
        return f"e5 word pieces, multilingual-e5-small vocabulary (BM25 k1={K1} b={B} avg {AVG_LEN})"

    def _vocabulary(self) -> Any:
        with self._lock:
            if self._vocab is None:
                from loupe.embedder.e5_torch import read_weights

                self._vocab = read_weights(layers=False).vocab
        return self._vocab

    def document(self, text: str) -> Weights:
        """A stored text's pieces (of the lower-cased text) with BM25 term weights (IDF is applied by the
        collection)."""
        if not text.strip():
            return [], []
        vocab = self._vocabulary()
        # Lower-cased, as BM25 does: the spoken side folds its pieces the same way (fold).
        ids = [i for i in vocab.tokenize(text.lower()) if i != vocab.unk]
        if not ids:
            return [], []
        counts = Counter(ids)
        norm = K1 * (1 - B + B * len(ids) / AVG_LEN)
        keys = sorted(counts)
        return keys, [counts[k] * (K1 + 1) / (counts[k] + norm) for k in keys]

    def spoken(self, audio: AudioInput) -> Weights | None:
        """A spoken query's piece weights: its expected piece counts to the power ``QUERY_POWER`` (pieces whose
        count is under ``min_mass`` dropped); None when the shipped head has no soft tokens (a version-1 head), so
        the query stays dense-only."""
        many = self.spoken_many([audio], role="query")
        return None if many is None else many[0]

    def spoken_many(self, items: Sequence[AudioInput], role: Role = "passage") -> list[Weights] | None:
        """:meth:`spoken` for several recordings: speech clips at ingest (``passage``: averaged over the encoder's
        clip speeds, reusing the features just embedded; weights are the expected counts) or queries (``query``:
        averaged over its query speeds; weights are the expected counts to the power ``QUERY_POWER``)."""
        masses = self.speech.piece_masses(items, role)
        if masses is None:
            return None
        power = QUERY_POWER if role == "query" else 1.0
        # Fold each distinct piece once for the whole call (a clip's masses cover thousands of pieces: a
        # Python loop per (clip, piece) cost ~1 s per 5 minutes of speech), then sum the masses per folded piece.
        every = [np.asarray(ids, dtype=np.int64) for ids, _ in masses]
        distinct = np.unique(np.concatenate(every)) if every else np.zeros(0, np.int64)
        folded = np.array([self.fold(int(i)) for i in distinct.tolist()], dtype=np.int64)
        out: list[Weights] = []
        for ids, values in masses:
            if len(ids) == 0:
                out.append(([], []))
                continue
            keys_all = folded[np.searchsorted(distinct, np.asarray(ids, dtype=np.int64))]
            keys, where = np.unique(keys_all, return_inverse=True)
            sums = np.bincount(where, weights=np.asarray(values, dtype=np.float64), minlength=len(keys))
            # The threshold applies to the expected count, before the query's power.
            keep = sums >= self.min_mass
            out.append((keys[keep].tolist(), (sums[keep] ** power).tolist()))
        return out

    def fold(self, piece: int) -> int:
        """The id of the piece's lower-case form where e5's vocabulary has one (``▁Call`` → ``▁call``): the head
        learnt from sentence-case text, and a word at the start of a spoken sentence is mid-sentence in a page."""
        hit = self._folded.get(piece)
        if hit is None:
            vocab = self._vocabulary()
            text = vocab.pieces[piece]
            hit = vocab.index.get(text.lower(), piece) if text != text.lower() else piece
            self._folded[piece] = hit
        return hit
