"""Chat: earlier turns, and follow-up questions condensed into standalone ones before retrieval.

A follow-up such as "and how deep is it?" retrieves nothing useful on its own. With a generator, the
conversation and the follow-up are rewritten into one standalone question (llama-index's condense-plus-context
pattern, with the same LLM); without one — or when the rewrite fails or looks wrong — the previous question's
key terms are added to a follow-up that refers back. History is trimmed to a token budget with llama-index's
``ChatMemoryBuffer``.

>>> condense_question("and how deep is it?", [Turn("user", "When was the north channel dredged?")])
'and how deep is it? (north channel dredged)'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from loupe.app.generate import key_terms, quote_data
from loupe.errors import GeneratorError

if TYPE_CHECKING:  # llama-index is imported where a conversation is used: ~0.8 s off every CLI start
    from llama_index.core.base.llms.types import ChatMessage
    from llama_index.core.llms import LLM

# Words that make a question lean on the conversation ("it", "that one", "also").
_REFERRING = frozenset(
    "it its it's this that these those they them their there he she his her him same also more other another "
    "else then former latter one ones".split()
)
# A question this short is usually a follow-up ("and the second one?"); measured on nothing better than
# reading chat logs of our own sessions, so kept conservative.
_SHORT_WORDS = 5
# History budget: recent turns that fit here are kept (the prompt also carries ~5 passages of ~300 tokens).
HISTORY_TOKENS = 1200

CONDENSE_PROMPT = (
    "Rewrite the user's last question as one standalone question that can be understood without the "
    "conversation. Keep names and terms from the conversation. Reply with the question only."
)


@dataclass(frozen=True)
class Turn:
    """One message of a conversation (what the UI and API keep between questions)."""

    role: Literal["user", "assistant"]
    content: str


def to_messages(history: Sequence[Turn]) -> list[ChatMessage]:
    """Turns as llama-index chat messages."""
    from llama_index.core.base.llms.types import ChatMessage, MessageRole

    return [
        ChatMessage(role=MessageRole.USER if t.role == "user" else MessageRole.ASSISTANT, content=t.content)
        for t in history
    ]


def recent_history(history: Sequence[Turn], token_limit: int = HISTORY_TOKENS) -> list[ChatMessage]:
    """The most recent turns that fit ``token_limit`` (llama-index ``ChatMemoryBuffer``), oldest first."""
    if not history:
        return []
    from llama_index.core.memory import ChatMemoryBuffer

    memory = ChatMemoryBuffer.from_defaults(chat_history=to_messages(history), token_limit=token_limit)
    return list(memory.get())


def is_follow_up(question: str) -> bool:
    """True when a question probably leans on the conversation (refers back, or is very short)."""
    words = [w.lower() for w in re.findall(r"[\w']+", question)]
    return len(words) <= _SHORT_WORDS or any(w in _REFERRING for w in words)


def keyword_condense(question: str, history: Sequence[Turn]) -> str:
    """A follow-up plus the previous user question's key terms that it lacks (no model needed)."""
    previous = next((t.content for t in reversed(history) if t.role == "user"), "")
    if not previous or not is_follow_up(question):
        return question
    have = set(key_terms(question))
    extra = [w for w in key_terms(previous) if w not in have]
    return f"{question} ({' '.join(extra)})" if extra else question


def condense_question(question: str, history: Sequence[Turn], llm: LLM | None = None) -> str:
    """The question to retrieve with: standalone as asked, or rewritten from the conversation.

    With ``llm`` the rewrite is the model's; a failure, an empty reply or a rambling one (over three times the
    question's length plus 100 characters) falls back to :func:`keyword_condense`.
    """
    if not history or not question.strip():
        return question
    if llm is None:
        return keyword_condense(question, history)
    from llama_index.core.base.llms.types import ChatMessage, MessageRole

    convo = "\n".join(f"{m.role.value}: {quote_data(m.content or '', 600)}" for m in recent_history(history))
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content=CONDENSE_PROMPT),
        ChatMessage(
            role=MessageRole.USER,
            content=f"<conversation>\n{convo}\n</conversation>\n\nLast question: {quote_data(question, 1000)}",
        ),
    ]
    try:
        rewritten = (llm.chat(messages).message.content or "").strip().strip('"').strip()
    except GeneratorError:
        return keyword_condense(question, history)
    if not rewritten or len(rewritten) > 3 * len(question) + 100:
        return keyword_condense(question, history)
    return rewritten.splitlines()[0]
