"""Loupe's Streamlit UI: Search, Ask (chat with citations), Ingest and Collections pages. Start it with ``loupe ui``.

This file is the entry point: it sets the page up, shows the collection in the sidebar and hands over to the
page the user picked (``ui/views/``). Everything heavy goes through :mod:`ui.common` and ``app/``.
"""

from __future__ import annotations

import os

import streamlit as st

# unstructured prints an advertisement on import unless told not to (entry point: env may be set here).
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # see app/cli.py: avoids stalls on a busy CPU

from loupe.ui.common import collection_picker, loupe

PAGES = [
    st.Page("views/search.py", title="Search", icon=":material/search:", default=True),
    st.Page("views/chat.py", title="Ask", icon=":material/forum:"),
    st.Page("views/ingest.py", title="Ingest", icon=":material/upload:"),
    st.Page("views/collections.py", title="Collections", icon=":material/database:"),
]


def main() -> None:
    """Page config, sidebar, navigation."""
    st.set_page_config(page_title="Loupe", page_icon=":material/search:", layout="wide")
    nav = st.navigation(PAGES)
    with st.sidebar:
        st.markdown("### Loupe")
        st.caption("Search and cited answers over documents, images, video and audio.")
        lp = loupe()
        collection_picker(lp)
        st.caption(f"Embedding profile `{lp.settings.profile}`")
    nav.run()


main()
