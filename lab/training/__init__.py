"""Training of models that ship with Loupe (``loupe train speech``)."""
