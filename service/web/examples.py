"""Example payloads for the OpenAPI document: real shapes a frontend developer can trust."""

from __future__ import annotations

from typing import Any

from service.billing.budgets import Budget

USER_ID = "6f1c2d9e-1b7a-4c1e-9a55-0d4b5a3b2c10"
AGENT_ID = "agent-0d8e4b1c-5a3f-4c6e-9b2a-7f1e3d5c9a10"
PROFILE_EXAMPLE = {
    "id": USER_ID,
    "email": "ada@example.com",
    "display_name": "Ada",
    "agent_status": "active",
    "letta_agent_id": AGENT_ID,
    "model": "gpt-4o-mini",
    "last_active_at": "2026-11-21T10:15:02Z",
    "created_at": "2026-11-20T08:00:00Z",
    "updated_at": "2026-11-21T10:15:02Z",
}
FEEDBACK_EXAMPLE = {
    "rating": "up",
    "comment": "Exactly right, thanks.",
    "created_at": "2026-11-21T10:16:40Z",
    "updated_at": "2026-11-21T10:16:40Z",
}
MESSAGE_EXAMPLE = {
    "id": "7aa1c2d3-0000-4000-8000-000000000002",
    "thread_id": "5e2a0b7c-0000-4000-8000-000000000004",
    "turn_id": "9b10c2d3-0000-4000-8000-000000000001",
    "role": "assistant",
    "content": "Got it, I will remember that your cat is Miso.",
    "status": "complete",
    "error_code": None,
    "prompt_tokens": 812,
    "completion_tokens": 14,
    "tokens_used": 826,
    "cost": "0.00013020",
    "cost_final": True,
    "model": "gpt-4o-mini",
    "created_at": "2026-11-21T10:15:02Z",
    "feedback": FEEDBACK_EXAMPLE,
}
THREAD_EXAMPLE = {
    "id": MESSAGE_EXAMPLE["thread_id"],
    "title": "Miso the cat",
    "title_source": "generated",
    "is_default": False,
    "forked_from_thread_id": None,
    "forked_from_message_id": None,
    "created_at": "2026-11-21T10:15:00Z",
    "last_message_at": "2026-11-21T10:15:02Z",
}
CHAT_REPLY_EXAMPLE = {
    "turn_id": MESSAGE_EXAMPLE["turn_id"],
    "thread_id": MESSAGE_EXAMPLE["thread_id"],
    "status": "complete",
    "user_message_id": "0c4d2e1f-0000-4000-8000-000000000003",
    "message_id": MESSAGE_EXAMPLE["id"],
    "content": MESSAGE_EXAMPLE["content"],
    "prompt_tokens": 812,
    "completion_tokens": 14,
    "total_tokens": 826,
    "cost": 0.0001302,
    "run_id": "run-5f0c2a9e-0000-4000-8000-000000000004",
}
BUDGET_EXAMPLE = {
    "spend": 0.4213,
    "max_budget": 10.0,
    "remaining": 9.5787,
    "budget_duration": "1mo",
    "budget_reset_at": "2026-12-01T00:00:00Z",
}
USAGE_DAY_EXAMPLE = {
    "total_messages": 6,
    "prompt_tokens": 2436,
    "completion_tokens": 42,
    "total_tokens": 2478,
    "total_cost": "0.00039060",
}
USAGE_EXAMPLE = {
    "start": "2026-11-20",
    "end": "2026-11-21",
    "days": [{"date": "2026-11-21", **USAGE_DAY_EXAMPLE}],
    "totals": USAGE_DAY_EXAMPLE,
    "billing": {"available": True, "budget": BUDGET_EXAMPLE},
}
MEMORY_EXAMPLE = {
    "agent_id": AGENT_ID,
    "blocks": [
        {"label": "human", "value": "User's name: Ada\nmy cat is Miso", "limit": 5000},
        {"label": "persona", "value": "You are a helpful, intelligent assistant with perfect memory.", "limit": 5000},
    ],
    "archival_count": 1,
    "archival_results": [{"content": "my passport number ends in 42", "timestamp": "2026-11-21 10:15:02 AM UTC"}],
}
AGENT_STATUS_EXAMPLE = {
    "agent_status": "active",
    "agent_id": AGENT_ID,
    "model": "gpt-4o-mini",
    "last_active_at": "2026-11-21T10:15:02Z",
    "provisioning_attempts": 0,
    "letta": {"reachable": True, "latency_ms": 3.2, "agent_found": True},
}
RESET_EXAMPLE = {
    "agent_id": "agent-1b2c3d4e-0000-4000-8000-000000000005",
    "previous_agent_id": AGENT_ID,
    "kept_memory": True,
}
AUTH_USER_EXAMPLE: dict[str, Any] = {
    "id": "8f0c6d8e-2b5c-4a52-9a53-1f0b8b1e2c3d",
    "aud": "authenticated",
    "role": "authenticated",
    "email": "ada@example.com",
    "email_confirmed_at": "2025-01-15T10:30:00.123456Z",
    "phone": "",
    "confirmed_at": "2025-01-15T10:30:00.123456Z",
    "last_sign_in_at": "2025-01-15T10:30:00.234567Z",
    "app_metadata": {"provider": "email", "providers": ["email"]},
    "user_metadata": {"full_name": "Ada Lovelace"},
    "identities": [],
    "created_at": "2025-01-15T10:30:00.012345Z",
    "updated_at": "2025-01-15T10:30:00.234567Z",
    "is_anonymous": False,
}
AUTH_UNCONFIRMED_USER_EXAMPLE: dict[str, Any] = {
    **{
        k: v for k, v in AUTH_USER_EXAMPLE.items() if k not in ("email_confirmed_at", "confirmed_at", "last_sign_in_at")
    },
    "confirmation_sent_at": "2025-01-15T10:30:00.345678Z",
}
AUTH_SESSION_EXAMPLE: dict[str, Any] = {
    "access_token": "eyJhbGciOiJFUzI1NiIsImtpZCI6Ii4uLiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl",
    "token_type": "bearer",
    "expires_in": 3600,
    "expires_at": 1736940600,
    "refresh_token": "v2ns4xb6jzqa",
    "user": AUTH_USER_EXAMPLE,
}
EXHAUSTED_BUDGET = Budget(spend=10.0123, max_budget=10.0, budget_duration="30d", budget_reset_at="2026-12-01T00:00:00Z")
