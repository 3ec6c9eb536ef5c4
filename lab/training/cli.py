"""``loupe train speech``: rebuild the spoken-query head that ships in embedder/data (lab/training/speech.py).

The recipe is seeded, so the command reproduces the shipped head; synthesised features are cached under
``--cache-dir`` (default ``~/.cache/loupe``) and reused by a rerun with the same recipe.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from loupe.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> dict[str, Any]:
    """Add ``loupe train speech`` to the CLI (the ``loupe.commands`` entry point); returns its handler."""
    p = sub.add_parser("train", help="retrain a model that ships with Loupe (speech: the spoken-query head)")
    p.add_argument("what", choices=["speech"], help="which model")
    p.add_argument("--out", type=Path, help="where to write the head (default: the shipped embedder/data file)")
    p.add_argument("--cache-dir", type=Path, help="feature cache folder (default ~/.cache/loupe)")
    p.add_argument("--report", type=Path, help="also write the training report (recipe, timings, curve) here")
    p.add_argument("--seed", type=int, help="random seed (default: the recipe's)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the recipe's)")
    p.add_argument("--en-sentences", type=int, help="English sentences to synthesise")
    p.add_argument("--other-sentences", type=int, help="German, French and Spanish sentences each")
    p.add_argument("--arch", choices=["soft-tokens", "pooled"], help="head type (default soft-tokens)")
    p.add_argument("--e2e-steps", type=int, help="soft-tokens: batches of fine-tuning through e5 (0 = none)")
    p.add_argument(
        "--e2e-from",
        type=Path,
        help="soft-tokens: continue the fine-tuning through e5 from this head file (skips the bag-of-pieces stage)",
    )
    p.add_argument(
        "--blend-pooled", type=float, help="soft-tokens: pooled head's share of the query and clip vectors (0 = none)"
    )

    return {"train": cmd_train}


def cmd_train(args: argparse.Namespace) -> int:
    """Run the speech training recipe and print where the head and the report went."""
    from loupe.embedder.speech import HEAD_FILE
    from loupe.lab.training.speech import run
    from loupe.lab.training.speech_data import Recipe

    names = {f.name for f in fields(Recipe)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if "e2e_from" in overrides:
        if not Path(overrides["e2e_from"]).is_file():
            raise ConfigError(f"--e2e-from {overrides['e2e_from']}: no such head file")
        overrides["e2e_from"] = str(overrides["e2e_from"])
        if overrides.get("e2e_steps", 1) < 1:
            raise ConfigError("--e2e-from needs --e2e-steps of at least 1")
    for k, v in overrides.items():
        if k in ("seed", "epochs", "en_sentences", "other_sentences") and v < 1:
            raise ConfigError(f"--{k.replace('_', '-')} must be at least 1, not {v}")
    if overrides.get("e2e_steps", 0) < 0 or not 0 <= overrides.get("blend_pooled", 0) < 1:
        raise ConfigError("--e2e-steps must be >= 0 and --blend-pooled in [0, 1)")
    recipe = Recipe(**overrides)
    out = args.out or HEAD_FILE
    report = run(recipe, args.cache_dir or Path.home() / ".cache" / "loupe", out=out)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1))
    best = report["best"]
    print(
        f"speech head written to {out} (best epoch {best.get('epoch')}: validation R@5 {best.get('r5', 0):.3f}, "
        f"query cosine {best.get('cos_query', 0):.3f}; total {report['timings'].get('total_s', 0):.0f} s)"
    )
    return 0
