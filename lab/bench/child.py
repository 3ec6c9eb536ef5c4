"""``python -m loupe.lab.bench.child KIND PARAMS.json RESULT.json``: one measured run in a fresh interpreter."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from loupe.lab.bench.common import Result
from loupe.lab.bench.ingest import child_llamaindex_ingest, child_loupe_ingest
from loupe.lab.bench.query import child_query_build, child_query_serve
from loupe.lab.bench.ray_ingest import child_ray_ingest


def child_main(argv: Sequence[str]) -> int:
    """``python -m app.bench KIND PARAMS.json RESULT.json``: run one measurement and write its result."""
    kind, params_path, result_path = argv
    started = time.time()
    children: dict[str, Callable[[Result], Result]] = {
        "loupe-ingest": child_loupe_ingest,
        "llamaindex-ingest": child_llamaindex_ingest,
        "query-build": child_query_build,
        "query-serve": child_query_serve,
        "ray-ingest": child_ray_ingest,
    }
    params = json.loads(Path(params_path).read_text())
    result = children[kind](params)
    result["_started_at"] = started
    Path(result_path).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
