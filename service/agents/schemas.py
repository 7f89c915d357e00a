"""What ``/api/v1/agent`` takes and answers with."""

from __future__ import annotations

from datetime import datetime

import msgspec


class LettaStatus(msgspec.Struct):
    reachable: bool
    latency_ms: float
    agent_found: bool | None


class AgentStatus(msgspec.Struct, kw_only=True):
    agent_status: str
    agent_id: str | None
    model: str | None
    last_active_at: datetime | None
    provisioning_attempts: int
    letta: LettaStatus


class MemoryBlock(msgspec.Struct):
    label: str
    value: str
    limit: int | None


class ArchivalHit(msgspec.Struct):
    content: str
    timestamp: str | None


class AgentMemory(msgspec.Struct, kw_only=True):
    agent_id: str
    blocks: list[MemoryBlock]
    archival_count: int
    archival_results: list[ArchivalHit] | None = None


class MemoryUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    human: str | None = None
    persona: str | None = None


class ResetRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    keep_memory: bool = False


class ResetResult(msgspec.Struct):
    agent_id: str
    previous_agent_id: str | None
    kept_memory: bool
