"""Retrieval evaluation on labelled queries (``loupe eval``) and answer checks (``--answers``)."""
