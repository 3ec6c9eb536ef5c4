"""The lab: measurement and training of the product (the top layer; see loupe/layers.py).

- ``loupe.lab.evaluation``: labelled-query retrieval scores (``loupe eval``) and answer checks;
- ``loupe.lab.bench``: ``loupe bench`` (ingest, query, embed, scale, voice, native), JSON with medians;
- ``loupe.lab.training``: ``loupe train speech``, the trainer of the spoken-query head that ships in embedder/data.

These modules import the product; nothing in ingest/, embedder/, index/, app/ or ui/ imports them. Their CLI
commands reach ``loupe`` through the ``loupe.commands`` entry points (pyproject.toml).
"""
