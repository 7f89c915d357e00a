"""The Letta agent every user gets (seed 001 §5, mapped to Letta 0.16.8).

The seed names the tools of Letta's older agent type. ``letta_v1_agent`` (Letta's default, and the type
that streams tokens cleanly) answers with plain assistant content and edits memory with newer tools:

| seed tool                | Letta 0.16.8 ``letta_v1_agent``               |
|--------------------------|-----------------------------------------------|
| ``send_message``         | none needed: replies are assistant content    |
| ``core_memory_append``   | ``memory_insert``                             |
| ``core_memory_replace``  | ``memory_replace``                            |
| ``archival_memory_insert`` | ``archival_memory_insert`` (requested)      |
| ``archival_memory_search`` | ``archival_memory_search`` (requested)      |
| (new)                    | ``conversation_search``: recall past messages |

The model is reached through the user's own BYOK provider (their LiteLLM key), named in an explicit
``llm_config``: Letta's ``provider/model`` handles are shared across the organisation and would bill
every user's calls to one key.
"""

from __future__ import annotations

from typing import Any

from service.settings import Settings

PERSONA = (
    "You are a helpful, intelligent assistant with perfect memory. You remember all conversations and "
    "can recall any detail from past interactions."
)
# Requested on top of the base tools Letta gives every letta_v1_agent (memory_insert, memory_replace,
# conversation_search).
EXTRA_TOOLS = ["archival_memory_insert", "archival_memory_search"]
BLOCK_LIMIT = 5000
# The tools that cannot change what a conversation's system message renders (the memory blocks, the archival count):
# a turn that calls any other tool may have edited the memory, and every thread's conversation is recompiled before
# its next turn (service.chat.events). Letta 0.16.8's block editors are memory_insert and memory_replace here (other
# agent types have core_memory_append, core_memory_replace, memory, memory_apply_patch, memory_rethink, ... too), and
# archival_memory_insert changes the archival count; a tool added later is taken as an editor until listed here.
READ_ONLY_TOOLS = frozenset({"conversation_search", "archival_memory_search"})


EDITABLE_BLOCKS = ("human", "persona")


# Names in Letta: the provider is found by its name, the agent by its tag (Letta does not isolate users in one
# organisation: these say whose a thing is).
def user_tag(user_id: str) -> str:
    return f"user:{user_id}"


def provider_name(user_id: str) -> str:
    return f"user-{user_id}"


def agent_name(user_id: str) -> str:
    return f"agent-{user_id}"


def human_block(display_name: str | None) -> str:
    return f"User's name: {display_name or 'Friend'}"


def agent_spec(
    settings: Settings,
    user_id: str,
    display_name: str | None,
    provider: str,
    llm_endpoint: str,
    blocks: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``client.agents.create``; ``blocks`` carries memory over an agent reset."""
    values = {"human": human_block(display_name), "persona": PERSONA, **(blocks or {})}
    return {
        "name": agent_name(user_id),
        "agent_type": "letta_v1_agent",
        "tags": [user_tag(user_id)],
        "metadata": {"user_id": user_id, "managed_by": "ai-chat-backend"},
        "memory_blocks": [{"label": label, "value": values[label], "limit": BLOCK_LIMIT} for label in EDITABLE_BLOCKS],
        "tools": EXTRA_TOOLS,
        "llm_config": {
            "model": settings.llm_model,
            "model_endpoint_type": "openai",
            "model_endpoint": llm_endpoint,
            "provider_name": provider,
            "provider_category": "byok",
            "context_window": settings.llm_context_window,
            "max_tokens": 1024,
            "temperature": 0.7,
            "put_inner_thoughts_in_kwargs": False,
        },
        "embedding_config": {
            "embedding_model": settings.embedding_model,
            "embedding_endpoint_type": "openai",
            "embedding_endpoint": llm_endpoint,
            "embedding_dim": settings.embedding_dim,
            "embedding_chunk_size": 300,
        },
    }
