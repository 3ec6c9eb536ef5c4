"""Page-level validation for spoken queries, with no dev-set data: choose the voice path's settings here.

``python eval/voice/page_validation.py [--out docs/eval/voice-page-validation.json]`` (after ``loupe train
speech``, whose cache holds the validation recipe).

The training validation (embedder/data/speech_head.md) ranks short sentences, and twice a setting it preferred
was worse on the spoken dev set, whose documents are pages of manuals. This set is built like the dev set's task
from material the head never trained on and the dev set does not use:

- queries: the *held-out* validation sentences (held-out voices too) that are a Debian package's synopsis, a
  manual page's one-line description, or a question form of one ("how do I list directory contents"),
  re-synthesised from their recorded recipe (espeak-ng voice, speed, pitch, augmentation);
- documents: the long description of every installed package (without the synopsis), and the text of the
  target manual pages plus ``--distractors`` others (without the NAME section that holds the description), in
  the product's 1,000-character chunks (first two chunks of a page);
- relevant: the package(s) with that synopsis, the page(s) with that description; a page ranks by its best
  chunk, as the product groups hits by place.

It scores the product's spoken-query path (head query output, dense; the heard word pieces, embedder/pieces.py;
weighted RRF with k 60 over the top 100 of each stage, as index/store.py asks Qdrant; IDF as Qdrant's
``Modifier.IDF``) and the alternatives that were weighed, with the typed query as the ceiling. Vectors are cached
in ``--work`` (the recordings' per head file); a rerun only scores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from loupe.embedder.base import AudioInput, TextInput  # noqa: E402
from loupe.embedder.e5 import E5Embedder  # noqa: E402
from loupe.embedder.pieces import MIN_MASS, QUERY_POWER, STAGE_WEIGHT, WordPieces  # noqa: E402
from loupe.embedder.speech import SAMPLE_RATE, SpeechEncoder, file_digest  # noqa: E402
from loupe.index.engines import RRF_K  # noqa: E402
from loupe.ingest.chunking import make_splitter  # noqa: E402
from loupe.lab.training import speech_data as T  # noqa: E402

DEPTH = 100  # per-stage prefetch, as index/store.py


def packages(status: Path = Path("/var/lib/dpkg/status")) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """Synopsis → package keys, and (key, long description) documents."""
    by_synopsis: dict[str, list[str]] = {}
    docs: list[tuple[str, str]] = []
    for block in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        name = re.search(r"^Package: (.+)$", block, re.M)
        desc = re.search(r"^Description: (.+)\n((?: .*\n?)*)", block, re.M)
        if not (name and desc):
            continue
        body = " ".join(s.strip() for s in desc.group(2).splitlines() if s.strip() and s.strip() != ".")
        if len(body) >= 80:
            key = f"pkg:{name.group(1)}"
            docs.append((key, body))
            by_synopsis.setdefault(T.clean(desc.group(1)), []).append(key)
    return by_synopsis, docs


def manual_pages() -> dict[str, list[str]]:
    """Description → page names ("ls (1)") from ``man -k .``."""
    out = subprocess.run(["man", "-k", "."], capture_output=True, text=True, timeout=120).stdout
    pages: dict[str, list[str]] = {}
    for line in out.splitlines():
        if " - " in line:
            name, desc = line.split(" - ", 1)
            pages.setdefault(T.clean(desc), []).append(name.strip())
    return pages


def render(page: str) -> str | None:
    """A manual page's text without its NAME section (which holds the description that is the query)."""
    m = re.match(r"(.+?) \((\w+)\)$", page)
    if not m:
        return None
    try:
        text = subprocess.run(
            ["man", "-P", "cat", m.group(2), m.group(1)],
            capture_output=True,
            text=True,
            timeout=20,
            env=dict(os.environ, MANWIDTH="90"),
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    text = re.sub(r".\x08", "", text)  # overstrike bold
    parts = re.split(r"\n(?=[A-Z][A-Z ]+\n)", text)
    head = m.group(1).upper() + "("
    body = "\n".join(p for p in parts if not p.startswith("NAME") and not p.strip().startswith(head)).strip()
    return body or None


def question_base(sentence: str) -> list[str]:
    """The description inside a question form ("how do I list ..." → "List ...", "list ...")."""
    for form in T.QUESTION_FORMS[1:]:
        prefix = form.split("{d}")[0]
        if sentence.startswith(prefix):
            d = sentence[len(prefix) :]
            return [d[:1].upper() + d[1:], d]
    return []


def build(cache: Path, work: Path, distractors: int) -> dict[str, Any]:
    """Queries, corpus and all vectors (cached in ``work``)."""
    saved = work / "vectors.npz"
    meta_file = work / "meta.json"
    if saved.is_file() and meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        arr = np.load(saved, allow_pickle=True)
        return {**meta, **{k: arr[k] for k in arr.files}}
    table = json.loads((cache / "sentences.json").read_text())["table"]
    recipe = json.loads((cache / "val.json").read_text())
    by_synopsis, docs = packages()
    pages = manual_pages()
    queries: list[dict[str, Any]] = []
    for i, r in enumerate(recipe):
        if r["lang"] != "en":
            continue
        s = table[r["sentence"]]
        if s in by_synopsis:
            queries.append({"recording": i, "kind": "package", "text": s, "relevant": by_synopsis[s]})
            continue
        for c in [s, *question_base(s)]:
            if c in pages:
                kind = "manual" if c == s else "manual question"
                queries.append({"recording": i, "kind": kind, "text": s, "relevant": [f"man:{p}" for p in pages[c]]})
                break
    wanted = sorted({k[4:] for q in queries if q["kind"] != "package" for k in q["relevant"]})
    rng = np.random.default_rng(5)
    others = [p for p in rng.permutation(sorted({p for v in pages.values() for p in v})) if p not in set(wanted)]
    split = make_splitter(1000, 150)
    for page in wanted + others[:distractors]:
        body = render(page)
        if body:
            docs.extend((f"man:{page}", c) for c in split.split_text(body)[:2])
    print(f"{len(queries)} queries, {len(docs)} documents", flush=True)
    t = time.time()
    e5 = E5Embedder()
    dense = e5.embed([TextInput(text) for _, text in docs], role="passage")
    typed = e5.embed([TextInput(q["text"]) for q in queries], role="query")
    print(f"e5: {time.time() - t:.0f} s", flush=True)
    work.mkdir(parents=True, exist_ok=True)
    meta = {"queries": queries, "keys": [k for k, _ in docs], "texts": [t for _, t in docs]}
    meta_file.write_text(json.dumps(meta))
    arrays = {"dense": dense, "typed": typed}
    np.savez(saved, **arrays)  # type: ignore[arg-type]
    return {**meta, **arrays}


def spoken_vectors(cache: Path, queries: list[dict[str, Any]], enc: SpeechEncoder) -> dict[str, np.ndarray]:
    """The queries re-synthesised from their recipe and heard by ``enc`` (at the product's query speeds): query
    vectors, heard piece masses, and the head's codebook."""
    table = json.loads((cache / "sentences.json").read_text())["table"]
    recipe = json.loads((cache / "val.json").read_text())
    spoken, masses = [], []
    for q in queries:
        r = recipe[q["recording"]]
        wave = T.espeak(table[r["sentence"]], r["voice"], r["speed"], r["pitch"])
        wave, _ = T.augment(wave, np.random.default_rng(q["recording"]))
        item = AudioInput(wave, SAMPLE_RATE, speech=True)
        spoken.append(enc.embed([item], role="query")[0])
        masses.append((enc.piece_masses([item], role="query") or [(np.zeros(0), np.zeros(0))])[0][1])
    code = np.asarray(enc._load().main.config["code_ids"], dtype=np.int64)
    return {"spoken": np.stack(spoken), "masses": np.stack(masses), "code": code}


class Scorer:
    """Ranks of the relevant package/page for score matrices over the documents."""

    def __init__(self, data: dict[str, Any], pieces: WordPieces) -> None:
        keys = data["keys"]
        groups = sorted(set(keys))
        index = {g: n for n, g in enumerate(groups)}
        self.group = np.array([index[k] for k in keys])
        self.relevant = [{index[k] for k in q["relevant"] if k in index} for q in data["queries"]]
        self.kinds = np.array([q["kind"] for q in data["queries"]])
        self.pieces = pieces
        docs = [pieces.document(t) for t in data["texts"]]
        df = Counter(i for ids, _ in docs for i in ids)
        self.vocab: dict[int, int] = {}
        rows, cols, vals = [], [], []
        for j, (ids, w) in enumerate(docs):
            for i, x in zip(ids, w, strict=True):
                idf = math.log(1 + (len(docs) - df[i] + 0.5) / (df[i] + 0.5))
                rows.append(j)
                cols.append(self.vocab.setdefault(i, len(self.vocab)))
                vals.append(x * idf)
        self.docs = np.zeros((len(docs), len(self.vocab)), np.float32)
        np.add.at(self.docs, (np.array(rows), np.array(cols)), np.array(vals, np.float32))
        self.code = [pieces.fold(int(i)) for i in data["code"]]

    def sparse(self, masses: np.ndarray, power: float, min_mass: float = MIN_MASS) -> np.ndarray:
        """Piece-stage scores of every query (expected counts folded, thresholded, raised to ``power``)."""
        q = np.zeros((len(masses), len(self.vocab)), np.float32)
        for k, m in enumerate(masses):
            folded: dict[int, float] = {}
            for key, v in zip(self.code, m.tolist(), strict=True):
                folded[key] = folded.get(key, 0.0) + v
            for key, v in folded.items():
                if v >= min_mass and key in self.vocab:
                    q[k, self.vocab[key]] = v**power
        return q @ self.docs.T

    @staticmethod
    def rrf(stages: list[tuple[np.ndarray, float]]) -> np.ndarray:
        """Weighted reciprocal-rank fusion over each stage's top ``DEPTH``."""
        fused = np.zeros_like(stages[0][0])
        for scores, weight in stages:
            top = np.argsort(-scores, axis=1)[:, :DEPTH]
            for q in range(top.shape[0]):
                fused[q, top[q]] += weight / (RRF_K + np.arange(1, DEPTH + 1))
        return fused + 1e-9 * stages[0][0]  # ties (outside every top list) by the first stage

    def ranks(self, scores: np.ndarray) -> np.ndarray:
        """0-based rank of the best relevant group (999 when not in the first 50 groups)."""
        out = []
        for q, order in enumerate(np.argsort(-scores, axis=1)):
            seen: set[int] = set()
            rank = 999
            for j in order:
                g = int(self.group[j])
                if g in seen:
                    continue
                if g in self.relevant[q]:
                    rank = len(seen)
                    break
                seen.add(g)
                if len(seen) >= 50:
                    break
            out.append(rank)
        return np.array(out)

    def summary(self, ranks: np.ndarray) -> dict[str, Any]:
        """R@1, R@5, MRR@10 overall and per query kind."""

        def s(r: np.ndarray) -> dict[str, float]:
            return {
                "R@1": round(float((r < 1).mean()), 3),
                "R@5": round(float((r < 5).mean()), 3),
                "MRR@10": round(float(np.where(r < 10, 1 / (r + 1), 0).mean()), 3),
                "n": len(r),
            }

        return {"all": s(ranks), **{k: s(ranks[self.kinds == k]) for k in sorted(set(self.kinds))}}


def main() -> None:
    """Build (or load) the set and score the settings."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "loupe" / f"speech-{T.Recipe().key()}")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "loupe" / "voice-page-validation")
    ap.add_argument("--distractors", type=int, default=400, help="manual pages beside the targets")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "eval" / "voice-page-validation.json")
    ap.add_argument("--head", type=Path, help="score another speech head file (default: the shipped one)")
    args = ap.parse_args()
    if not (args.cache / "val.json").is_file():
        sys.exit(f"no validation recipe in {args.cache}: run `loupe train speech` first (it writes the cache)")
    data = build(args.cache, args.work, args.distractors)
    enc = SpeechEncoder(head_path=args.head)
    # The recordings' vectors depend on the head: cached per head file (its digest), unlike the documents'.
    own = args.work / f"spoken-{file_digest(enc.head_path)}.npz"
    if not own.is_file():
        np.savez(own, **spoken_vectors(args.cache, data["queries"], enc))  # type: ignore[arg-type]
    arr = np.load(own)
    data.update({k: arr[k] for k in arr.files})
    sc = Scorer(data, WordPieces(enc))
    dense = data["spoken"] @ data["dense"].T
    rows: dict[str, Any] = {
        "typed query, dense (ceiling)": sc.summary(sc.ranks(data["typed"] @ data["dense"].T)),
        "spoken, dense only": sc.summary(sc.ranks(dense)),
    }
    for power in (1.0, 0.75, 0.5, 0.25):
        sparse = sc.sparse(data["masses"], power)
        rows[f"spoken, pieces only, power {power}"] = sc.summary(sc.ranks(sparse))
        for weight in (1.0, 2.0, 3.0):
            rows[f"spoken, dense + pieces (power {power}, weight {weight})"] = sc.summary(
                sc.ranks(sc.rrf([(dense, 1.0), (sparse, weight)]))
            )
    product = f"spoken, dense + pieces (power {QUERY_POWER}, weight {STAGE_WEIGHT})"
    for name, row in rows.items():
        mark = " <- product" if name == product else ""
        a = row["all"]
        print(f"{name:55s} R@1 {a['R@1']:.3f} R@5 {a['R@5']:.3f} MRR@10 {a['MRR@10']:.3f}{mark}")
    n = {k: int((sc.kinds == k).sum()) for k in sorted(set(sc.kinds))}
    report = {
        "what": "held-out spoken validation sentences (package synopses, manual-page descriptions) -> their "
        "package description / manual page; no dev-set data",
        "queries": n,
        "documents": len(data["keys"]),
        "groups": len(set(data["keys"])),
        "head": str(enc.head_path.relative_to(ROOT) if enc.head_path.is_relative_to(ROOT) else enc.head_path),
        "query_speeds": list(enc.query_speeds),
        "product": product,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
