"""The agents' own SQL (the agent id itself is written under a provisioning claim: ``service.provisioning.store``)."""

from __future__ import annotations

# The memory blocks of the user's agent may have changed outside a turn (an edit through the API): every thread's
# Letta conversation is recompiled before its next turn (a turn that edits memory bumps it in chat.store.STORE_TURN).
MEMORY_EDITED = "update public.user_profiles set memory_version = memory_version + 1 where id = $1"
