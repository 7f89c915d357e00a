"""Test double of a LiteLLM 1.106.2 proxy in database mode, plus the upstream LLM behind it.

The real proxy cannot run here with a database (Prisma downloads its engines at start-up), so tests
and the local dev stack use this Litestar app instead. It reproduces the parts of LiteLLM's HTTP API
the system uses, with the request/response shapes and error bodies read from LiteLLM 1.106.2's
source (``litellm/proxy/...``; file references are in the comments):

* management: ``/user/new``, ``/user/info``, ``/user/update``, ``/user/delete``, ``/key/generate``,
  ``/key/info``, ``/model/info``, ``/v1/models``, ``/health/*`` (management writes need the master key);
* LLM: ``/v1/chat/completions`` (SSE and JSON) and ``/v1/embeddings``, answered by the deterministic
  :mod:`devstack.doubles.scripted_model`; spend is charged per key and per LiteLLM user
  (prompt_tokens x input price + completion_tokens x output price); a key limited to ``models`` is
  refused any other model, and over-budget keys and users are rejected, the way LiteLLM's auth does;
* spend logs: every charged call (a stream cut short too, with what it was charged) leaves one
  ``LiteLLM_SpendLogs`` row, readable with ``GET /spend/logs`` (``api_key``, ``user_id``,
  ``request_id``, ``start_date``/``end_date``, ``summarize``). Like LiteLLM's batch writer
  (``proxy_batch_write_at``), a row is inserted only on a later tick of a fixed grid of
  ``DoubleSettings.spend_logs_batch_write_s`` seconds (between 1x and 2x that after the call;
  env ``PROXY_BATCH_WRITE_AT`` for the CLI, default 1 s); until then ``/spend/logs`` does not show it,
  although the key's and user's spend already include it;
* test control under ``/_double/`` (master key):
  ``GET|DELETE /_double/requests`` the log of chat/embedding calls (key, LiteLLM user, body's
  ``user``, model, stream, tokens, cost, status, the body itself);
  ``GET|POST|DELETE /_double/faults`` failures for the next calls of a route, e.g.
  ``{"route": "/v1/chat/completions", "count": 2, "status": 503}``, ``{"route": "*", "delay": 5}``,
  ``{"route": "/v1/chat/completions", "drop": true}``, ``{..., "drop_after_chunks": 3}``,
  ``{..., "user_id": "u1", "error": {"message": ..., "type": ..., "param": null, "code": "400"}}``;
  ``POST /_double/spend`` ``{"user_id": "u1", "spend": 10.5}`` (or ``{"key": "sk-...", ...}``).

State is in memory (one asyncio lock), optionally persisted to a JSON file so a restart keeps users
and keys; spend-log rows are appended to a JSON-lines file beside it (``<state>.spend-logs.jsonl``,
one write per call instead of rewriting every row). Differences from the real proxy are deliberate
simplifications: no teams/orgs/access groups/wildcard model names, only the master key generates keys and
a key's ``allowed_routes`` are stored but not enforced, budgets reset lazily when read instead of by a
background job, key and user spend are updated synchronously (LiteLLM batches those too), rows queued for the batch
writer survive a restart (LiteLLM loses them on a crash), and rejected calls leave no spend-log row.

Run: ``python -m devstack.doubles.litellm_double --port 4000 --master-key sk-master-dev``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import math
import os
import re
import secrets
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import msgspec
from litestar import Litestar, MediaType, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import FromQuery
from litestar.response import Stream

from devstack.doubles import scripted_model

LITELLM_VERSION = "1.106.2"
DEFAULT_MASTER_KEY = "sk-master-dev"
MODEL_CREATED_AT = 1677610602  # litellm/constants.py DEFAULT_MODEL_CREATED_AT_TIME
PROXY_ADMIN_USER_ID = "default_user_id"  # litellm_proxy_admin_name: the master key's user_id
MAX_LOGGED_REQUESTS = 2000
MODEL_API_BASE = "https://api.openai.com"
SPEND_LOGS_PAGINATION_COUNT_CAP = 10000  # spend_management_endpoints.py: /spend/logs returns at most this
DEFAULT_SPEND_LOGS_BATCH_WRITE_S = 1.0  # LiteLLM's proxy_batch_write_at is 10 s (+0-5 s jitter)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One deployment, with the prices of LiteLLM's model cost map for that model."""

    model_name: str
    input_cost_per_token: float
    output_cost_per_token: float
    max_tokens: int
    max_input_tokens: int
    max_output_tokens: int | None
    mode: Literal["chat", "embedding"] = "chat"
    output_vector_size: int | None = None

    @property
    def model_id(self) -> str:
        return hashlib.sha256(f"openai/{self.model_name}".encode()).hexdigest()

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input_cost_per_token + completion_tokens * self.output_cost_per_token


# Values from litellm 1.106.2's model_prices_and_context_window_backup.json.
DEFAULT_MODELS = (
    ModelSpec("gpt-4o-mini", 1.5e-07, 6e-07, max_tokens=16384, max_input_tokens=128000, max_output_tokens=16384),
    ModelSpec("gpt-4", 3e-05, 6e-05, max_tokens=4096, max_input_tokens=8192, max_output_tokens=4096),
    ModelSpec(
        "text-embedding-3-small",
        2e-08,
        0.0,
        max_tokens=8191,
        max_input_tokens=8191,
        max_output_tokens=None,
        mode="embedding",
        output_vector_size=scripted_model.EMBEDDING_DIMS,
    ),
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class DoubleSettings:
    master_key: str = DEFAULT_MASTER_KEY
    state_file: Path | None = None
    models: tuple[ModelSpec, ...] = DEFAULT_MODELS
    # litellm/__init__.py: budget_exceeded_status_code = 422 (older releases answered 400/429).
    budget_exceeded_status_code: int = 422
    # Real LiteLLM only adds usage.cost to streamed usage with
    # litellm_settings.include_cost_in_streaming_usage: true; our deployment sets it.
    include_cost_in_streaming_usage: bool = True
    # Extra pause between streamed chunks for every reply ("[[slow]]" sets its own).
    chunk_delay_s: float = 0.0
    # LiteLLM writes spend-log rows in batches (general_settings.proxy_batch_write_at): a row shows in
    # /spend/logs from the first tick of this grid that is at least this long after the call; 0 = at once.
    spend_logs_batch_write_s: float = DEFAULT_SPEND_LOGS_BATCH_WRITE_S
    clock: Callable[[], datetime] = _utcnow


# ---------------------------------------------------------------------------------------------
# Rows, shaped like the Prisma models in litellm/proxy/schema.prisma


class UserRow(msgspec.Struct, kw_only=True):
    """Scalar columns of ``LiteLLM_UserTable`` (the password column is never stored)."""

    user_id: str
    user_alias: str | None = None
    team_id: str | None = None
    sso_user_id: str | None = None
    organization_id: str | None = None
    object_permission_id: str | None = None
    password_reset_required: bool | None = None
    last_breach_check_at: datetime | None = None
    teams: list[str] = []
    user_role: str | None = None
    max_budget: float | None = None
    spend: float = 0.0
    user_email: str | None = None
    models: list[str] = []
    metadata: dict[str, Any] = {}
    max_parallel_requests: int | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    budget_duration: str | None = None
    budget_reset_at: datetime | None = None
    allowed_cache_controls: list[str] = []
    policies: list[str] = []
    model_spend: dict[str, Any] = {}
    model_max_budget: dict[str, Any] = {}
    created_at: datetime | None = None
    updated_at: datetime | None = None


class KeyRow(msgspec.Struct, kw_only=True):
    """Scalar columns of ``LiteLLM_VerificationToken``; ``token`` is the sha256 of the key."""

    token: str
    key_name: str | None = None
    key_alias: str | None = None
    soft_budget_cooldown: bool = False
    spend: float = 0.0
    total_spend: float = 0.0
    expires: datetime | None = None
    models: list[str] = []
    aliases: dict[str, Any] = {}
    config: dict[str, Any] = {}
    router_settings: dict[str, Any] | None = {}
    user_id: str | None = None
    team_id: str | None = None
    agent_id: str | None = None
    project_id: str | None = None
    permissions: dict[str, Any] = {}
    max_parallel_requests: int | None = None
    metadata: dict[str, Any] = {}
    blocked: bool | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    tpd_limit: int | None = None
    max_budget: float | None = None
    budget_duration: str | None = None
    budget_reset_at: datetime | None = None
    allowed_cache_controls: list[str] = []
    allowed_routes: list[str] = []
    key_type: str | None = None
    policies: list[str] = []
    access_group_ids: list[str] = []
    model_spend: dict[str, Any] = {}
    model_max_budget: dict[str, Any] = {}
    budget_fallbacks: dict[str, Any] = {}
    budget_id: str | None = None
    organization_id: str | None = None
    object_permission_id: str | None = None
    created_at: datetime | None = None
    created_by: str | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None
    settings_updated_at: datetime | None = None
    last_active: datetime | None = None
    rotation_count: int | None = 0
    auto_rotate: bool | None = False
    rotation_interval: str | None = None
    last_rotation_at: datetime | None = None
    key_rotation_at: datetime | None = None
    budget_limits: Any | None = None


class SpendLogRow(msgspec.Struct, kw_only=True):
    """Every column of ``LiteLLM_SpendLogs``, as ``spend_tracking_utils.get_logging_payload`` fills it
    and Prisma reads it back (JSON columns parsed, times in UTC to the millisecond)."""

    request_id: str
    call_type: str
    api_key: str  # the sha256 of the key, like LiteLLM_VerificationToken.token
    spend: float = 0.0
    total_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    startTime: datetime
    endTime: datetime
    request_duration_ms: int | None = None
    completionStartTime: datetime | None = None
    model: str = ""
    model_id: str | None = ""
    model_group: str | None = ""
    custom_llm_provider: str | None = ""
    api_base: str | None = ""
    user: str | None = ""
    metadata: dict[str, Any] = {}
    cache_hit: str | None = "False"
    cache_key: str | None = "Cache OFF"  # litellm.cache is None
    request_tags: list[str] = []
    team_id: str | None = ""
    organization_id: str | None = ""
    end_user: str | None = ""
    requester_ip_address: str | None = None
    messages: Any = {}  # store_prompts_in_spend_logs is off
    response: Any = {}
    session_id: str | None = None
    status: str | None = "success"
    mcp_namespaced_tool_name: str | None = None
    billing_agent_id: str | None = None
    agent_id: str | None = None
    proxy_server_request: Any = {}
    litellm_call_id: str | None = None
    created_at: datetime  # when the batch writer inserted it: the row is visible from then on
    updated_at: datetime


# The keys of SpendLogsMetadata (proxy/_types.py): _get_spend_logs_metadata writes every one of them.
_SPEND_LOGS_METADATA_KEYS = """
actor_agent_id target_agent_id billing_agent_id agent_execution_mode verified_human_user_id
autorouter_baseline_observation additional_usage_values user_api_key user_api_key_alias user_api_key_team_id
user_api_key_project_id user_api_key_project_alias user_api_key_org_id user_api_key_user_id user_api_key_team_alias
spend_logs_metadata requester_ip_address user_agent litellm_call_id applied_guardrails mcp_tool_call_metadata
vector_store_request_metadata routing_decision internal_call_origin litellm_roi_estimator guardrail_information
eval_information status proxy_server_request batch_models batch_successful_requests batch_failed_requests
error_information usage_object model_map_information cold_storage_object_key litellm_overhead_time_ms
attempted_retries max_retries attempted_fallbacks original_model_group cost_breakdown compression_savings
autorouter_savings autorouter_savings_estimate litellm_gateway_injected_cache router_metadata azure_spillover
used_client_oauth_token
"""


class PersistedState(msgspec.Struct):
    users: list[UserRow] = []
    keys: list[KeyRow] = []


# Relation fields a Prisma row dumps as null (or [] when included), so shapes match model_dump().
_USER_RELATIONS: dict[str, Any] = {
    "verified_subjects": None,
    "litellm_organization_table": None,
    "organization_memberships": [],  # user_info includes it: get_data(include=organization_memberships)
    "invitations_created": None,
    "invitations_updated": None,
    "invitations_user": None,
    "object_permission": None,
}
_KEY_RELATIONS: dict[str, Any] = {
    "litellm_budget_table": None,
    "litellm_organization_table": None,
    "litellm_project_table": None,
    "object_permission": None,
    "jwt_key_mappings": None,
}


def _dump(row: msgspec.Struct) -> dict[str, Any]:
    dumped: dict[str, Any] = msgspec.to_builtins(row)
    return dumped


# Every field of NewUserResponse (litellm/proxy/_types.py) with its default: FastAPI serialises
# the response model in full, nulls included.
_NEW_USER_RESPONSE_NULL_FIELDS = """
key_alias duration max_budget user_id team_id agent_id max_parallel_requests tpm_limit rpm_limit budget_duration
budget_limits model_max_budget budget_fallbacks model_rpm_limit model_tpm_limit mcp_rpm_limit tag_rpm_limit
guardrails policies prompts blocked object_permission key tpd_limit default_estimated_output_tokens
default_estimated_output_tokens_per_model budget_id end_user_budget_id tags disable_global_guardrails
enable_prompt_caching throttle_on_budget_exceeded enforced_params allowed_passthrough_routes
denied_passthrough_routes allowed_vector_store_indexes rpm_limit_type tpm_limit_type router_settings
access_group_ids key_name key_type expires token_id organization_id project_id litellm_budget_table token
created_by updated_by created_at updated_at user_email user_role teams user_alias
"""
_NEW_USER_RESPONSE_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(_NEW_USER_RESPONSE_NULL_FIELDS.split()),
    "models": [],
    "spend": 0,
    "metadata": {},
    "allowed_cache_controls": [],
    "config": {},
    "permissions": {},
    "aliases": {},
    "allowed_routes": [],
}


# ---------------------------------------------------------------------------------------------
# Errors, in LiteLLM's two shapes


class ProxyError(Exception):
    """A ``ProxyException``: ``{"error": {"message", "type", "param", "code"}}`` (proxy/_types.py)."""

    def __init__(
        self,
        status_code: int,
        message: str,
        error_type: str,
        param: str | None = None,
        provider_specific_fields: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body: dict[str, Any] = {
            "error": {"message": message, "type": error_type, "param": param, "code": str(status_code)}
        }
        if provider_specific_fields:
            self.body["error"]["provider_specific_fields"] = dict(provider_specific_fields)


class DetailError(Exception):
    """A FastAPI ``HTTPException`` that escaped LiteLLM's handlers: ``{"detail": ...}``."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status_code = status_code
        self.detail = detail


def _management_error(status_code: int, detail: Any) -> ProxyError:
    """handle_exception_on_proxy (proxy/utils.py): HTTPException -> ProxyException; a dict detail
    becomes its Python repr in ``message``, type is always internal_server_error."""
    return ProxyError(status_code, str(detail), "internal_server_error", None)


def _auth_error(message: str, status_code: int = 401) -> ProxyError:
    """auth_exception_handler._as_proxy_exception: auth_error with param "None" (a string)."""
    return ProxyError(status_code, message, "auth_error", "None")


def _validation_error(loc: list[str], msg: str) -> DetailError:
    return DetailError(422, [{"type": "value_error", "loc": ["body", *loc], "msg": msg}])


def _on_proxy_error(_: Request[Any, Any, Any], exc: ProxyError) -> Response[Any]:
    return Response(exc.body, status_code=exc.status_code)


def _on_detail_error(_: Request[Any, Any, Any], exc: DetailError) -> Response[Any]:
    return Response({"detail": exc.detail}, status_code=exc.status_code)


# ---------------------------------------------------------------------------------------------
# Durations and budget resets (litellm_core_utils/duration_parser.py)

_DURATION_ALIASES = {"hourly": "1h", "daily": "24h", "weekly": "7d", "monthly": "30d"}


def next_budget_reset(duration: str, now: datetime) -> datetime:
    """get_next_standardized_reset_time in UTC at midnight: 1d next midnight, 7d next Monday,
    30d/1mo the 1st of next month, Nd N days from today's midnight, h/m/s aligned to the clock."""
    match = re.match(r"(\d+)(mo|[smhdw])$", _DURATION_ALIASES.get(duration.strip().lower(), duration))
    if match is None:
        raise ValueError(f"Invalid budget_duration {duration!r}")
    value, unit = int(match.group(1)), match.group(2)
    if value <= 0 or (unit == "mo" and value != 1):
        raise ValueError(f"Invalid budget_duration {duration!r}")
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    days = value * 7 if unit == "w" else value
    if unit == "mo" or (unit == "d" and value == 30):
        first = midnight.replace(day=1)
        if first > now:
            return first
        return (
            first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
        )
    if unit in ("d", "w"):
        if days == 1:
            return midnight + timedelta(days=1)
        if days == 7:
            monday = midnight + timedelta(days=(7 - now.weekday()) % 7)
            return monday if monday > now else monday + timedelta(days=7)
        return midnight + timedelta(days=days)
    step = {"h": 3600, "m": 60, "s": 1}[unit] * value
    elapsed = int((now - midnight).total_seconds())
    return midnight + timedelta(seconds=elapsed - elapsed % step + step)


def budget_duration_error(duration: str | None, now: datetime) -> str | None:
    """timezone_utils.budget_duration_error: why a duration cannot be stored, or None."""
    if duration is None:
        return None
    try:
        next_budget_reset(duration, now)
    except ValueError:
        return f"Invalid budget_duration '{duration}'. Use a format like '1h', '24h', '7d', or '30d'."
    return None


def _duration_seconds(duration: str) -> int:
    match = re.match(r"(\d+)(mo|[smhdw])$", duration)
    if match is None:
        raise ValueError(f"Invalid duration {duration!r}")
    unit_seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "mo": 30 * 86400}
    return int(match.group(1)) * unit_seconds[match.group(2)]


# ---------------------------------------------------------------------------------------------
# Faults and the request log


class Fault(msgspec.Struct, kw_only=True):
    """Failure injected into the next ``count`` calls of ``route`` ("/v1/x" == "/x"; "*" = any)."""

    route: str
    count: int = 1
    user_id: str | None = None  # only calls made with a key of this LiteLLM user
    status: int | None = None  # answer with this status (alias "status_code") and a LiteLLM error body
    delay: float = 0.0  # seconds to wait before handling (or failing) the call
    drop: bool = False  # send headers, then drop the connection before the body
    drop_after_chunks: int | None = None  # streamed chat: drop after this many SSE chunks
    message: str | None = None
    error_type: str | None = None
    error: dict[str, Any] | None = None  # a complete error object, answered as {"error": error}

    @property
    def fails(self) -> bool:
        return self.drop or self.status is not None or self.error is not None


def _route_key(path: str) -> str:
    return path[3:] if path.startswith("/v1/") else path


_ERROR_TYPE_BY_STATUS = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def _fault_response(fault: Fault) -> Response[Any]:
    if fault.error is not None:
        code = str(fault.error.get("code", ""))
        status = fault.status or (int(code) if code.isdecimal() else 500)
        return Response({"error": fault.error}, status_code=status)
    error = _fault_error(fault)
    return Response(error.body, status_code=error.status_code)


def _fault_error(fault: Fault) -> ProxyError:
    status = fault.status or 500
    error_type = fault.error_type or _ERROR_TYPE_BY_STATUS.get(
        status, "invalid_request_error" if status < 500 else "internal_server_error"
    )
    return ProxyError(status, fault.message or f"Injected fault: HTTP {status}", error_type, None)


def _fault_summary(fault: Fault) -> dict[str, Any]:
    summary: dict[str, Any] = msgspec.to_builtins(fault)
    del summary["count"]  # already decremented: meaningless in the log
    return summary


async def _dropped_body() -> AsyncIterator[bytes]:
    raise ConnectionAbortedError("litellm double: connection dropped by an injected fault")
    yield b""  # pragma: no cover  (makes this an async generator)


# ---------------------------------------------------------------------------------------------
# State


@dataclass(slots=True)
class Caller:
    api_key: str
    is_admin: bool
    user_id: str | None
    key: KeyRow | None = None


@dataclass(slots=True)
class DoubleState:
    settings: DoubleSettings
    users: dict[str, UserRow] = field(default_factory=dict)
    keys: dict[str, KeyRow] = field(default_factory=dict)  # by token hash
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    spend_logs: list[SpendLogRow] = field(default_factory=list)  # written and queued rows, oldest first
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def now(self) -> datetime:
        return self.settings.clock()

    def model(self, name: object) -> ModelSpec | None:
        return next((m for m in self.settings.models if m.model_name == name), None)

    def load(self) -> None:
        path = self.settings.state_file
        if path is None or not path.exists():
            return
        persisted = msgspec.json.decode(path.read_bytes(), type=PersistedState)
        self.users = {u.user_id: u for u in persisted.users}
        self.keys = {k.token: k for k in persisted.keys}
        spend_logs = _spend_logs_path(path)
        if spend_logs.exists():
            decoder = msgspec.json.Decoder(SpendLogRow)
            for line in spend_logs.read_bytes().splitlines():
                try:
                    self.spend_logs.append(decoder.decode(line))
                except msgspec.DecodeError:
                    continue  # a line cut short by a crash

    def save(self) -> None:
        path = self.settings.state_file
        if path is None:
            return
        data = msgspec.json.encode(PersistedState(users=list(self.users.values()), keys=list(self.keys.values())))
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a crash never leaves half a file

    def write_spend_log(self, row: SpendLogRow) -> None:
        """Queue a row for LiteLLM's batch writer: it is inserted (``created_at``) at a later tick."""
        row.created_at = row.updated_at = batch_write_time(row.endTime, self.settings.spend_logs_batch_write_s)
        self.spend_logs.append(row)
        if self.settings.state_file is not None:
            with _spend_logs_path(self.settings.state_file).open("ab") as file:
                file.write(msgspec.json.encode(row) + b"\n")

    def written_spend_logs(self) -> list[SpendLogRow]:
        """The rows in LiteLLM_SpendLogs now: the batch writer has inserted them."""
        now = self.now()
        return [row for row in self.spend_logs if row.created_at <= now]

    def user(self, user_id: str | None) -> UserRow | None:
        """The user row, with its budget reset first if its window has ended (LiteLLM's reset job
        runs every few minutes; the double resets lazily on read)."""
        row = self.users.get(user_id) if user_id is not None else None
        if row is not None and row.budget_duration and row.budget_reset_at and self.now() >= row.budget_reset_at:
            row.spend = 0.0
            row.budget_reset_at = next_budget_reset(row.budget_duration, self.now())
        return row

    def take_fault(self, path: str, user_id: str | None) -> Fault | None:
        for fault in self.faults:
            if fault.user_id is not None and fault.user_id != user_id:
                continue
            if fault.route == "*" or _route_key(fault.route) == _route_key(path):
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def log(self, entry: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(entry)
        del self.requests[:-MAX_LOGGED_REQUESTS]
        return entry


def _spend_logs_path(state_file: Path) -> Path:
    return state_file.with_suffix(".spend-logs.jsonl")


def _to_ms(moment: datetime) -> datetime:
    """Prisma's DateTime precision: milliseconds."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def batch_write_time(queued: datetime, interval_s: float) -> datetime:
    """When LiteLLM's periodic spend-log writer inserts a row queued at ``queued``: the first tick of a
    grid of ``interval_s`` seconds (from the Unix epoch) at least ``interval_s`` after it, so between
    1x and 2x the interval later, and rows queued in the same window land together."""
    if interval_s <= 0:
        return _to_ms(queued)
    step_ms = max(1, round(interval_s * 1000))
    due_ms = math.floor(queued.timestamp() * 1000) + step_ms
    return datetime.fromtimestamp(-(-due_ms // step_ms) * step_ms / 1000, UTC)


def _state(request: Request[Any, Any, Any]) -> DoubleState:
    state: DoubleState = request.app.state.double
    return state


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()  # proxy/_types.py hash_token


def _abbreviate(key: str) -> str:
    return f"sk-...{key[-4:]}" if len(key) >= 8 else "sk-..."  # auth_utils.abbreviate_api_key


def _mask_user_id(user_id: str) -> str:
    # route_checks._mask_user_id: SensitiveDataMasker(visible_prefix=6, visible_suffix=2)
    if len(user_id) <= 8:
        return "***" if len(user_id) <= 4 else user_id
    return user_id[:6] + "*" * (len(user_id) - 8) + user_id[-2:]


# ---------------------------------------------------------------------------------------------
# Authentication (proxy/auth/user_api_key_auth.py)


def presented_key(request: Request[Any, Any, Any]) -> str | None:
    """get_api_key: x-litellm-api-key wins over Authorization; then the provider-style headers.
    Returns "" for an Authorization header without a Bearer/Basic scheme."""
    custom = request.headers.get("x-litellm-api-key")
    if custom is not None:
        return re.sub(r"^(Bearer|bearer|Basic) ", "", custom)
    authorization = request.headers.get("authorization")
    if authorization:
        match = re.match(r"^(Bearer|bearer|Basic) (.*)$", authorization)
        return match.group(2) if match else ""
    for header in ("api-key", "x-api-key", "x-goog-api-key", "ocp-apim-subscription-key"):
        value = request.headers.get(header)
        if value:
            return value
    return None


def authenticate(state: DoubleState, request: Request[Any, Any, Any]) -> Caller:
    key = presented_key(request)
    if key is None:
        raise _auth_error("Authentication Error, No api key passed in.")
    if key == "":
        raise _auth_error("Authentication Error, Malformed API Key passed in. Ensure Key has `Bearer ` prefix.")
    if secrets.compare_digest(key.encode(), state.settings.master_key.encode()):
        return Caller(api_key=key, is_admin=True, user_id=PROXY_ADMIN_USER_ID)
    if not key.startswith("sk-"):
        masked = f"{key[:4]}****{key[-4:]}" if len(key) > 8 else "****"
        raise _auth_error(f"LiteLLM Virtual Key expected. Received={masked}, expected to start with 'sk-'.")
    row = state.keys.get(_hash_key(key))
    if row is None:
        raise ProxyError(
            401,
            f"Authentication Error, Invalid proxy server token passed. Received API Key = {_abbreviate(key)}, "
            f"Key Hash (Token) ={_hash_key(key)}. Unable to find token in cache or `LiteLLM_VerificationTokenTable`",
            "token_not_found_in_db",
            "key",
        )
    return Caller(api_key=key, is_admin=False, user_id=row.user_id, key=row)


def require_admin(state: DoubleState, caller: Caller, route: str) -> None:
    """route_checks._raise_admin_only_route_exception, wrapped as an auth_error."""
    if caller.is_admin:
        return
    user = state.users.get(caller.user_id or "")
    role = (user.user_role if user else None) or "unknown"
    raise _auth_error(
        "Authentication Error, Only proxy admin can be used to generate, delete, update info for new "
        f"keys/users/teams. Route={route}. Your role={role}. Your user_id={_mask_user_id(caller.user_id or 'unknown')}"
    )


async def _json_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise DetailError(422, [{"type": "json_invalid", "loc": ["body"], "msg": f"JSON decode error: {exc}"}]) from exc
    if not isinstance(body, dict):
        raise DetailError(422, [{"type": "model_attributes_type", "loc": ["body"], "msg": "Input should be an object"}])
    return body


# ---------------------------------------------------------------------------------------------
# Management endpoints (proxy/management_endpoints/internal_user_endpoints.py)

_USER_ROLES = ("proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer")


class NewUserBody(msgspec.Struct, kw_only=True):
    """The NewUserRequest fields the double acts on; other fields are accepted and ignored."""

    user_id: str | None = None
    user_email: str | None = None
    user_alias: str | None = None
    user_role: Literal["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"] | None = None
    max_budget: float | None = None
    budget_duration: str | None = None
    spend: float | None = 0.0
    models: list[str] | None = None
    metadata: dict[str, Any] | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    max_parallel_requests: int | None = None
    key_alias: str | None = None
    duration: str | None = None
    auto_create_key: bool = True
    sso_user_id: str | None = None
    allowed_cache_controls: list[str] | None = None
    password: str | None = None


def _convert(body: Mapping[str, Any], kind: type[NewUserBody]) -> NewUserBody:
    if body.get("max_budget") == "":  # GenerateRequestBase.check_max_budget
        body = {**body, "max_budget": None}
    try:
        return msgspec.convert(body, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise _validation_error([], str(exc)) from exc


@post("/user/new", status_code=200)
async def user_new(request: Request[Any, Any, Any]) -> dict[str, Any]:
    state = _state(request)
    caller = authenticate(state, request)
    require_admin(state, caller, "/user/new")
    data = _convert(await _json_body(request), NewUserBody)
    if data.password is not None:
        raise _validation_error(
            ["password"],
            "Value error, password cannot be set via /user/new. Users set their own password through an "
            "invitation link (POST /invitation/new).",
        )
    async with state.lock:
        now = state.now()
        error = budget_duration_error(data.budget_duration, now)
        if error is not None:
            raise _management_error(400, {"error": error})  # common_utils.validate_budget_duration
        user_id = data.user_id or str(uuid.uuid4())
        # _check_duplicate_user_id / _check_duplicate_user_email: HTTP 409 (email case-insensitive).
        if data.user_id and data.user_id.strip() in state.users:
            raise _management_error(409, {"error": f"User with id {data.user_id.strip()} already exists"})
        if data.user_email:
            clash = next(
                (u for u in state.users.values() if (u.user_email or "").lower() == data.user_email.strip().lower()),
                None,
            )
            if clash is not None:
                raise _management_error(409, {"error": f"User with email {clash.user_email} already exists"})
        user = UserRow(
            user_id=user_id,
            user_alias=data.user_alias,
            user_role=data.user_role,
            max_budget=data.max_budget,
            spend=data.spend or 0.0,
            user_email=data.user_email,
            models=data.models or [],
            metadata=data.metadata or {},
            max_parallel_requests=data.max_parallel_requests,
            tpm_limit=data.tpm_limit,
            rpm_limit=data.rpm_limit,
            budget_duration=data.budget_duration,
            budget_reset_at=next_budget_reset(data.budget_duration, now) if data.budget_duration else None,
            allowed_cache_controls=data.allowed_cache_controls or [],
            sso_user_id=data.sso_user_id,
            created_at=now,
            updated_at=now,
        )
        state.users[user_id] = user
        response = {**_NEW_USER_RESPONSE_DEFAULTS, **_new_user_fields(user)}
        if data.auto_create_key:
            # key_management_endpoints.generate_key_helper_fn: sk-<token_urlsafe(16)>, key has no budget
            # of its own (the budget is the user's).
            key = f"sk-{secrets.token_urlsafe(16)}"
            expires = now + timedelta(seconds=_duration_seconds(data.duration)) if data.duration else None
            row = KeyRow(
                token=_hash_key(key),
                key_name=_abbreviate(key),
                key_alias=data.key_alias,
                expires=expires,
                models=user.models,
                user_id=user_id,
                max_parallel_requests=data.max_parallel_requests,
                metadata=dict(user.metadata),
                tpm_limit=data.tpm_limit,
                rpm_limit=data.rpm_limit,
                allowed_cache_controls=user.allowed_cache_controls,
                created_at=now,
                updated_at=now,
            )
            state.keys[row.token] = row
            response |= {
                "key": key,
                "key_name": row.key_name,
                "key_alias": row.key_alias,
                "expires": expires,
                "aliases": {},
                "config": {},
                "permissions": {},
                "model_max_budget": {},
                "budget_fallbacks": {},
                "router_settings": {},
                "access_group_ids": [],
                "created_at": now,
                "updated_at": now,
            }
        else:
            response["key"] = ""  # new_user: response.get("token", "") when no key was made
        state.save()
    return response


def _new_user_fields(user: UserRow) -> dict[str, Any]:
    """generate_key_helper_fn's user_data, as filtered into NewUserResponse."""
    return {
        "user_id": user.user_id,
        "user_email": user.user_email,
        "user_alias": user.user_alias,
        "user_role": user.user_role,
        "max_budget": user.max_budget,
        "spend": user.spend,
        "models": user.models,
        "metadata": user.metadata,
        "max_parallel_requests": user.max_parallel_requests,
        "tpm_limit": user.tpm_limit,
        "rpm_limit": user.rpm_limit,
        "budget_duration": user.budget_duration,
        "allowed_cache_controls": user.allowed_cache_controls,
    }


def render_user(user: UserRow, *, include_relations: bool = True) -> dict[str, Any]:
    rendered = _dump(user)
    if include_relations:
        rendered |= _USER_RELATIONS
    return rendered


def render_key(row: KeyRow) -> dict[str, Any]:
    return _dump(row) | _KEY_RELATIONS


def _user_keys(state: DoubleState, user_id: str) -> list[dict[str, Any]]:
    # _process_keys_for_user_info: a key without a team gets team_alias "None" (the string).
    return [render_key(k) | {"team_alias": "None"} for k in state.keys.values() if k.user_id == user_id]


@get("/user/info")
async def user_info(request: Request[Any, Any, Any], user_id: FromQuery[str | None] = None) -> dict[str, Any]:
    state = _state(request)
    caller = authenticate(state, request)
    async with state.lock:
        if user_id is None and caller.is_admin:  # _get_user_info_for_proxy_admin
            admin = state.user(caller.user_id)
            return {
                "user_id": caller.user_id,
                "user_info": render_user(admin, include_relations=False) if admin else None,
                "keys": [render_key(k) | {"team_alias": "None"} for k in state.keys.values()],
                "teams": [],
            }
        if user_id is not None and not caller.is_admin and user_id != caller.user_id:
            raise _auth_error(
                f"key not allowed to access this user's info. user_id={user_id}, key's user_id={caller.user_id}", 403
            )
        target = user_id or caller.user_id
        user = state.user(target)
        if user is None:
            raise _management_error(404, f"User {target} not found")
        return {
            "user_id": target,
            "user_info": render_user(user) | {"model_max_budget_usage": {}},
            "keys": _user_keys(state, user.user_id),
            "teams": [],
        }


# UpdateUserRequest fields the double applies; _update_internal_user_params keeps max_budget,
# budget_duration, tpm_limit and rpm_limit when sent (even null) and other fields when non-empty.
_NULLABLE_UPDATES = ("max_budget", "budget_duration", "tpm_limit", "rpm_limit")
_UPDATABLE = (
    "user_alias",
    "user_role",
    "user_email",
    "spend",
    "models",
    "metadata",
    "max_parallel_requests",
    "allowed_cache_controls",
    "teams",
    "sso_user_id",
)


@post("/user/update", status_code=200)
async def user_update(request: Request[Any, Any, Any]) -> dict[str, Any]:
    state = _state(request)
    caller = authenticate(state, request)
    require_admin(state, caller, "/user/update")
    body = await _json_body(request)
    if body.get("user_id") is None and body.get("user_email") is None:
        raise _validation_error([], "Value error, Either user id or user email must be provided")
    if body.get("max_budget") == "":
        body["max_budget"] = None
    changes = {k: body[k] for k in _NULLABLE_UPDATES if k in body}
    changes |= {k: body[k] for k in _UPDATABLE if body.get(k) not in (None, [], {})}
    if body.get("user_role") is not None and body["user_role"] not in _USER_ROLES:
        raise _validation_error(["user_role"], f"Input should be one of {', '.join(map(repr, _USER_ROLES))}")
    async with state.lock:
        now = state.now()
        error = budget_duration_error(changes.get("budget_duration"), now)
        if error is not None:
            # user_update re-raises HTTPExceptions as auth_error ProxyExceptions with param "None".
            raise ProxyError(400, str({"error": error}), "auth_error", "None")
        if "budget_duration" in changes:
            duration = changes["budget_duration"]
            changes["budget_reset_at"] = next_budget_reset(duration, now) if duration else None
        user = state.user(body.get("user_id")) if body.get("user_id") else None
        if user is None and not body.get("user_id"):
            user = next((u for u in state.users.values() if u.user_email == body["user_email"]), None)
        if user is None:  # prisma upsert: an unknown user is created (proxy admins only)
            user = UserRow(user_id=body.get("user_id") or str(uuid.uuid4()), created_at=now)
            state.users[user.user_id] = user
        try:
            for name, value in changes.items():
                setattr(user, name, float(value) if name in ("max_budget", "spend") and value is not None else value)
        except (TypeError, ValueError) as exc:
            raise _validation_error([], str(exc)) from exc
        user.updated_at = now
        state.save()
        return {"user_id": user.user_id, "data": render_user(user, include_relations=False)}


@post("/user/delete", status_code=200)
async def user_delete(request: Request[Any, Any, Any]) -> int:
    state = _state(request)
    caller = authenticate(state, request)
    require_admin(state, caller, "/user/delete")
    body = await _json_body(request)
    user_ids = body.get("user_ids")
    if not isinstance(user_ids, list) or not all(isinstance(u, str) for u in user_ids):
        raise DetailError(422, [{"type": "missing", "loc": ["body", "user_ids"], "msg": "Field required"}])
    async with state.lock:
        # delete_user raises a plain HTTPException (no ProxyException wrapping): {"detail": {...}}.
        for user_id in user_ids:
            if user_id not in state.users:
                raise DetailError(404, {"error": f"User not found, passed user_id={user_id}"})
        for token in [t for t, k in state.keys.items() if k.user_id in user_ids]:
            del state.keys[token]
        deleted = sum(1 for u in set(user_ids) if state.users.pop(u, None) is not None)
        state.save()
    return deleted  # prisma delete_many returns the row count


@get("/key/info")
async def key_info(request: Request[Any, Any, Any], key: FromQuery[str | None] = None) -> dict[str, Any]:
    """key_management_endpoints.info_key_fn: the row minus its hash, plus a derived status."""
    state = _state(request)
    caller = authenticate(state, request)
    looked_up = key or caller.api_key
    hashed = _hash_key(looked_up) if looked_up.startswith("sk-") else looked_up
    async with state.lock:
        row = state.keys.get(hashed)
        if row is None:
            raise ProxyError(404, "Key not found in database", "not_found_error", "key")
        if not caller.is_admin and row.user_id != caller.user_id:
            raise _management_error(403, "You are not allowed to access this key's info. Your role=None")
        info = render_key(row)
        del info["token"]
        expired = row.expires is not None and row.expires < state.now()
        info["status"] = "revoked" if row.blocked else "expired" if expired else "active"
        return {"key": looked_up, "info": info}


# GenerateKeyResponse's fields: NewUserResponse's but the user's own.
_GENERATE_KEY_RESPONSE_DEFAULTS: dict[str, Any] = {
    name: value
    for name, value in _NEW_USER_RESPONSE_DEFAULTS.items()
    if name not in ("user_email", "user_role", "teams", "user_alias")
}
# handle_key_type: the routes a key of each type may call.
_KEY_TYPE_ROUTES = {"llm_api": ["llm_api_routes"], "management": ["management_routes"], "read_only": ["info_routes"]}
MINIMUM_CUSTOM_KEY_LENGTH = 16  # litellm/constants.py


class GenerateKeyBody(msgspec.Struct, kw_only=True):
    """The GenerateKeyRequest fields the double acts on; other fields are accepted and ignored."""

    key: str | None = None
    key_alias: str | None = None
    duration: str | None = None
    models: list[str] | None = None
    max_budget: float | None = None
    budget_duration: str | None = None
    user_id: str | None = None
    metadata: dict[str, Any] | None = None
    key_type: Literal["llm_api", "management", "read_only", "default"] | None = "default"
    max_parallel_requests: int | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None


@post("/key/generate", status_code=200)
async def key_generate(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """key_management_endpoints.generate_key_fn: a key of its own (``max_budget``/``budget_duration`` are the
    key's, not a user's), checked in the real order. A custom ``key`` that exists already is kept as it is
    (Prisma's upsert with an empty update) while the answer echoes the request."""
    state = _state(request)
    caller = authenticate(state, request)
    require_admin(state, caller, "/key/generate")
    body = await _json_body(request)
    if body.get("max_budget") == "":  # GenerateRequestBase.check_max_budget
        body["max_budget"] = None
    try:
        data = msgspec.convert(body, GenerateKeyBody, strict=False)
    except msgspec.ValidationError as exc:
        raise _validation_error([], str(exc)) from exc
    if data.max_budget is not None and (not math.isfinite(data.max_budget) or data.max_budget < 0):
        raise _management_error(
            400, {"error": f"max_budget must be a non-negative finite number. Received: {data.max_budget}"}
        )
    async with state.lock:
        now = state.now()
        error = budget_duration_error(data.budget_duration, now)
        if error is not None:
            raise _management_error(400, {"error": error})  # common_utils.validate_budget_duration
        if data.key_alias is not None and any(k.key_alias == data.key_alias for k in state.keys.values()):
            raise ProxyError(  # _enforce_unique_key_alias
                400,
                f"Key with alias '{data.key_alias}' already exists. Unique key aliases across all keys are required.",
                "bad_request_error",
                "key_alias",
            )
        if data.key is not None and not data.key.startswith("sk-"):
            masked = f"{data.key[:4]}****{data.key[-4:]}" if len(data.key) > 8 else "****"
            raise _management_error(
                400, {"error": f"Invalid key format. LiteLLM Virtual Key must start with 'sk-'. Received: {masked}"}
            )
        if data.key is not None and len(data.key) < MINIMUM_CUSTOM_KEY_LENGTH:
            raise _management_error(
                400,
                {
                    "error": "Invalid key format. LiteLLM Virtual Key must be at least "
                    f"{MINIMUM_CUSTOM_KEY_LENGTH} characters long."
                },
            )
        key = data.key or f"sk-{secrets.token_urlsafe(16)}"
        expires = now + timedelta(seconds=_duration_seconds(data.duration)) if data.duration else None
        key_type = data.key_type or "default"
        row = KeyRow(
            token=_hash_key(key),
            key_name=_abbreviate(key),
            key_alias=data.key_alias,
            expires=expires,
            models=data.models or [],
            user_id=data.user_id,
            max_parallel_requests=data.max_parallel_requests,
            metadata=data.metadata or {},
            tpm_limit=data.tpm_limit,
            rpm_limit=data.rpm_limit,
            max_budget=data.max_budget,
            budget_duration=data.budget_duration,
            budget_reset_at=next_budget_reset(data.budget_duration, now) if data.budget_duration else None,
            allowed_routes=_KEY_TYPE_ROUTES.get(key_type, []),
            key_type=key_type,
            created_by=caller.user_id,
            updated_by=caller.user_id,
            created_at=now,
            updated_at=now,
        )
        stored = state.keys.setdefault(row.token, row)
        state.save()
    fields = (
        "key_name key_alias expires models max_budget budget_duration user_id metadata max_parallel_requests "
        "tpm_limit rpm_limit allowed_routes key_type created_by updated_by"
    )
    requested, kept = _dump(row), _dump(stored)
    return {
        **_GENERATE_KEY_RESPONSE_DEFAULTS,
        **{name: requested[name] for name in fields.split()},
        "key": key,
        "token": stored.token,  # generate_key_fn remaps token to the hash (token_id)
        "token_id": stored.token,
        "spend": 0.0,
        "model_max_budget": {},
        "access_group_ids": [],
        "router_settings": {},
        "created_at": kept["created_at"],
        "updated_at": kept["updated_at"],
    }


# ---------------------------------------------------------------------------------------------
# Spend logs (proxy/spend_tracking/spend_management_endpoints.py, view_spend_logs)

# The roles view_spend_logs does not narrow to the caller's own user_id; any other role, and a user
# without one (auth_checks.effective_user_role reads None as internal_user), sees only its own rows.
_SPEND_LOG_READERS_OF_ALL_ROWS = ("proxy_admin", "proxy_admin_viewer")
# pydantic's str -> bool (FastAPI query parameter), case-insensitive.
_QUERY_BOOLS = {"1": True, "on": True, "t": True, "true": True, "y": True, "yes": True}
_QUERY_BOOLS |= {"0": False, "off": False, "f": False, "false": False, "n": False, "no": False}


def _query_bool(name: str, raw: str | None, default: bool) -> bool:
    if raw is None:
        return default
    value = _QUERY_BOOLS.get(raw.lower())
    if value is None:  # otel_request_validation_exception_handler: {"detail": [{type, loc, msg}]}
        message = "Input should be a valid boolean, unable to interpret input"
        raise DetailError(422, [{"type": "bool_parsing", "loc": ["query", name], "msg": message}])
    return value


def _spend_logs_user_scope(state: DoubleState, caller: Caller, user_id: str | None) -> str | None:
    """view_spend_logs: an internal user's (or role-less user's) key reads only its own user's rows,
    whatever user_id it asks for; the master key and proxy admins (viewers too) read any."""
    if caller.is_admin:
        return user_id
    user = state.users.get(caller.user_id or "")
    if user is not None and user.user_role in _SPEND_LOG_READERS_OF_ALL_ROWS:
        return user_id
    return caller.user_id


def _parse_spend_logs_date(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:  # the endpoint's catch-all: ProxyException(type internal_error, code 500)
        raise ProxyError(500, f"/spend/logs Error{exc}", "internal_error", "None") from exc


def _daily_spend_summary(rows: list[SpendLogRow], end_day: datetime) -> list[dict[str, Any]]:
    """The summarize=true answer: per day (of startTime, UTC) the spend by hashed key (as top-level
    keys), the total, and by user and model; then zero days after the last day with rows up to
    end_date. No rows: []."""
    days: dict[str, list[SpendLogRow]] = {}
    for row in sorted(rows, key=lambda r: r.startTime):
        days.setdefault(row.startTime.date().isoformat(), []).append(row)
    summary: list[dict[str, Any]] = []
    for day, day_rows in days.items():
        item: dict[str, Any] = {}
        for row in day_rows:
            item[row.api_key] = item.get(row.api_key, 0.0) + row.spend
        users: dict[str, float] = {}
        models: dict[str, float] = {}
        for row in day_rows:
            users[row.user or ""] = users.get(row.user or "", 0.0) + row.spend
            models[row.model] = models.get(row.model, 0.0) + row.spend
        item |= {"startTime": day, "spend": sum(r.spend for r in day_rows), "users": users, "models": models}
        summary.append(item)
    if summary:
        last = datetime.fromisoformat(summary[-1]["startTime"]).date()
        for offset in range(1, (end_day.date() - last).days + 1):
            day = (last + timedelta(days=offset)).isoformat()
            summary.append({"startTime": day, "spend": 0, "users": {}, "models": {}})
    return summary


@get("/spend/logs")
async def spend_logs(
    request: Request[Any, Any, Any],
    api_key: FromQuery[str | None] = None,
    user_id: FromQuery[str | None] = None,
    request_id: FromQuery[str | None] = None,
    start_date: FromQuery[str | None] = None,
    end_date: FromQuery[str | None] = None,
    summarize: FromQuery[str | None] = None,
) -> Response[Any]:
    """Spend-log rows newest first (at most 10,000, then ``x-litellm-spend-logs-truncated: true``),
    filtered by ``api_key`` (a key, hashed if it starts with "sk-", or its hash), ``user_id`` and
    ``request_id`` (request_id or litellm_call_id). ``start_date`` and ``end_date`` (YYYY-MM-DD, UTC)
    count only together, as startTime from start midnight to end midnight inclusive (so a row later on
    end_date is left out); with both, ``summarize`` (default true) answers per-day totals instead of
    rows, where request_id matches request_id only. Rows appear once the batch writer inserted them."""
    state = _state(request)
    caller = authenticate(state, request)
    wants_summary = _query_bool("summarize", summarize, default=True)
    user_id = _spend_logs_user_scope(state, caller, user_id)
    hashed_key = _hash_key(api_key) if api_key is not None and api_key.startswith("sk-") else api_key
    rows = state.written_spend_logs()
    if hashed_key is not None:
        rows = [r for r in rows if r.api_key == hashed_key]
    if user_id is not None:
        rows = [r for r in rows if r.user == user_id]
    if start_date is not None and end_date is not None:
        start, end = _parse_spend_logs_date(start_date), _parse_spend_logs_date(end_date)
        rows = [r for r in rows if start <= r.startTime <= end]
        if wants_summary:
            if request_id is not None:
                rows = [r for r in rows if r.request_id == request_id]
            return Response(_daily_spend_summary(rows, end))
    if request_id is not None:
        rows = [r for r in rows if request_id in (r.request_id, r.litellm_call_id)]
    rows = sorted(rows, key=lambda r: r.startTime, reverse=True)[:SPEND_LOGS_PAGINATION_COUNT_CAP]
    truncated = len(rows) == SPEND_LOGS_PAGINATION_COUNT_CAP
    headers = {"x-litellm-spend-logs-truncated": "true"} if truncated else None
    return Response([_dump(r) for r in rows], headers=headers)


# ---------------------------------------------------------------------------------------------
# Models and health


def _model_info(spec: ModelSpec) -> dict[str, Any]:
    info: dict[str, Any] = {
        "id": spec.model_id,
        "db_model": False,
        "key": spec.model_name,
        "max_tokens": spec.max_tokens,
        "max_input_tokens": spec.max_input_tokens,
        "max_output_tokens": spec.max_output_tokens,
        "input_cost_per_token": spec.input_cost_per_token,
        "output_cost_per_token": spec.output_cost_per_token,
        "litellm_provider": "openai",
        "mode": spec.mode,
        "supports_function_calling": spec.mode == "chat",
        "supports_tool_choice": spec.mode == "chat",
        "supports_system_messages": spec.mode == "chat",
    }
    if spec.output_vector_size is not None:
        info["output_vector_size"] = spec.output_vector_size
    return {"model_name": spec.model_name, "litellm_params": {"model": f"openai/{spec.model_name}"}, "model_info": info}


@get(["/model/info", "/v1/model/info"])
async def model_info(request: Request[Any, Any, Any], litellm_model_id: FromQuery[str | None] = None) -> dict[str, Any]:
    state = _state(request)
    authenticate(state, request)
    specs = [m for m in state.settings.models if litellm_model_id in (None, m.model_id)]
    if litellm_model_id is not None and not specs:
        raise DetailError(400, {"error": f"Model id = {litellm_model_id} not found on litellm proxy"})
    return {"data": [_model_info(m) for m in specs]}


@get(["/v1/models", "/models"])
async def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """proxy/utils.py create_model_info_response: OpenAI model objects plus mode and token limits."""
    state = _state(request)
    caller = authenticate(state, request)
    allowed = caller.key.models if caller.key is not None and caller.key.models else None
    data = []
    for spec in state.settings.models:
        if allowed is not None and spec.model_name not in allowed:
            continue
        entry: dict[str, Any] = {"id": spec.model_name, "object": "model", "created": MODEL_CREATED_AT}
        entry |= {"owned_by": "openai", "mode": spec.mode, "max_input_tokens": spec.max_input_tokens}
        if spec.max_output_tokens is not None:
            entry["max_output_tokens"] = spec.max_output_tokens
        data.append(entry)
    return {"data": data, "object": "list"}


@get("/health/liveliness")
async def health_liveliness() -> Response[bytes]:
    return Response(json.dumps("I'm alive!").encode(), media_type=MediaType.JSON)


@get("/health/readiness")
async def health_readiness() -> dict[str, Any]:
    return {"status": "healthy", "db": "connected"}


# ---------------------------------------------------------------------------------------------
# LLM endpoints


def _log_entry(request: Request[Any, Any, Any], body: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "time": now.isoformat(),
        "path": request.url.path,
        "api_key": presented_key(request),
        "litellm_user_id": None,
        "model": body.get("model"),
        "user": body.get("user"),
        "stream": bool(body.get("stream")),
        "status_code": 200,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cost": 0.0,
        "completed": False,
        "tool_call": None,
        "reply": None,
        "fault": None,
        "body": dict(body),
    }


# auth_checks._MASKED_KEY_NAME_RE: a key_name echoed in a budget error only while it still looks masked.
_MASKED_KEY_NAME = re.compile(r"sk-\.\.\.(?:[^\s\x00-\x1f\x7f-\x9f]{4})?")


def check_key_model(caller: Caller, model: object) -> None:
    """auth_checks.can_key_call_model: a key limited to ``models`` (empty: every model) may call only those."""
    key = caller.key
    if key is None or not isinstance(model, str) or not key.models:
        return
    if model in key.models or {"*", "all-proxy-models", "all-team-models"} & set(key.models):
        return  # all-team-models on a key without a team means every model
    raise ProxyError(
        403,
        f"The requested model '{model}' is not available for this API key, or the model name is invalid. "
        "Check the models available to you and try again.",
        "key_model_access_denied",
        "model",
    )


def check_key_budget(state: DoubleState, caller: Caller) -> None:
    """auth_checks.virtual_key_max_budget_check: a key whose spend reached its own max_budget is rejected
    (its budget window reset first, lazily, like a user's)."""
    key = caller.key
    if key is None or key.max_budget is None or not math.isfinite(key.max_budget):
        return
    now = state.now()
    if key.budget_duration and key.budget_reset_at and now >= key.budget_reset_at:
        key.spend = 0.0
        key.budget_reset_at = next_budget_reset(key.budget_duration, now)
    if key.spend < key.max_budget:
        return
    label = key.key_alias or "key"
    descriptor = f"{label} ({key.key_name})" if key.key_name and _MASKED_KEY_NAME.fullmatch(key.key_name) else label
    raise ProxyError(
        state.settings.budget_exceeded_status_code,
        f"Budget has been exceeded! Key={descriptor} Current cost: {key.spend}, Max budget: {key.max_budget}",
        "budget_exceeded",
        None,
    )


def check_budget(state: DoubleState, caller: Caller) -> None:
    """auth_checks._user_max_budget_check: a user whose spend reached max_budget is rejected."""
    user = state.user(caller.user_id) if not caller.is_admin else None
    if user is None or user.max_budget is None or user.spend < user.max_budget:
        return
    raise ProxyError(
        state.settings.budget_exceeded_status_code,
        f"ExceededBudget: User={user.user_id} over budget. Spend={user.spend}, Budget={user.max_budget}",
        "budget_exceeded",
        None,
    )


def charge(
    state: DoubleState,
    caller: Caller,
    cost: float,
    row: SpendLogRow,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    error: BaseException | None = None,
) -> None:
    """Adds the call's cost to the key and its user, and queues the call's spend-log row with the same
    cost. ``error``: the call broke off part-way (LiteLLM's failure log bills the partial usage)."""
    if caller.key is not None:
        caller.key.spend += cost
        caller.key.last_active = state.now()
    user = state.user(caller.user_id) if not caller.is_admin else None
    if user is not None:
        user.spend += cost
    row.spend = cost
    row.prompt_tokens, row.completion_tokens = prompt_tokens, completion_tokens
    row.total_tokens = prompt_tokens + completion_tokens
    row.endTime = _to_ms(state.now())
    row.completionStartTime = row.completionStartTime or row.endTime
    row.request_duration_ms = int((row.endTime - row.startTime).total_seconds() * 1000)
    if error is not None:
        row.status = row.metadata["status"] = "failure"
        row.metadata["error_information"] = {
            "error_code": "",
            "error_class": type(error).__name__,
            "llm_provider": "openai",
            "traceback": "",
            "error_message": str(error),
        }
    state.write_spend_log(row)
    state.save()


def _draft_spend_log(
    request: Request[Any, Any, Any], state: DoubleState, caller: Caller, spec: ModelSpec, body: Mapping[str, Any]
) -> SpendLogRow:
    """The call's spend-log row as get_logging_payload builds it; ``charge`` completes it. Its
    request_id is the response's ``id`` (chat) or else the litellm_call_id (embeddings, failures)."""
    call_id = str(uuid.uuid4())
    hashed = _hash_key(caller.api_key)  # UserAPIKeyAuth hashes an "sk-" api_key
    start = _to_ms(state.now())
    client_ip = request.client.host if request.client is not None else ""
    end_user = body.get("user") if isinstance(body.get("user"), str) else None
    metadata: dict[str, Any] = dict.fromkeys(_SPEND_LOGS_METADATA_KEYS.split())
    metadata |= {
        "user_api_key": hashed,
        "user_api_key_alias": caller.key.key_alias if caller.key is not None else None,
        "user_api_key_user_id": caller.user_id,
        "requester_ip_address": client_ip,
        "user_agent": request.headers.get("user-agent"),
        "litellm_call_id": call_id,
        "litellm_roi_estimator": False,
        "additional_usage_values": {},
        "status": "success",
    }
    return SpendLogRow(
        request_id=call_id,
        call_type="aembedding" if spec.mode == "embedding" else "acompletion",
        api_key=hashed,
        startTime=start,
        endTime=start,
        model=spec.model_name,
        model_id=spec.model_id,
        model_group=spec.model_name,
        custom_llm_provider="openai",
        api_base=MODEL_API_BASE,
        user=caller.user_id or "",  # metadata user_api_key_user_id; the master key's is default_user_id
        metadata=metadata,
        end_user=end_user or "",  # the body's "user" (Letta sends its user id)
        requester_ip_address=client_ip,
        session_id=str(uuid.uuid4()),  # the call's trace id
        litellm_call_id=call_id,
        created_at=start,
        updated_at=start,
    )


async def _admit_llm_call(
    request: Request[Any, Any, Any], route: str, required: str, mode: str
) -> tuple[DoubleState, Caller, dict[str, Any], ModelSpec, dict[str, Any], SpendLogRow]:
    """Auth, budget, body and model checks in the real proxy's order (the key's models, the key's budget, the
    user's budget, then the request itself); failures are logged too."""
    state = _state(request)
    body = await _json_body(request)
    entry = _log_entry(request, body, state.now())
    try:
        caller = authenticate(state, request)
        entry["litellm_user_id"] = caller.user_id if not caller.is_admin else None
        check_key_model(caller, body.get("model"))
        async with state.lock:
            check_key_budget(state, caller)
            check_budget(state, caller)
        if body.get(required) is None:
            raise ProxyError(
                400, f"{route}: Missing required parameter: '{required}'.", "invalid_request_error", required
            )
        spec = state.model(body.get("model"))
        if spec is None or spec.mode != mode:
            message = (
                f"{route}: Invalid model name passed in model={body.get('model', '')}. "
                "Call `/v1/models` to view available models for your key."
            )
            raise ProxyError(400, message, "invalid_request_error", None, {"error": message})
        fault = request.state.get("fault")
        if fault is not None:
            entry["fault"] = _fault_summary(fault)
    except ProxyError as exc:
        entry["status_code"] = exc.status_code
        state.log(entry)
        raise
    return state, caller, body, spec, state.log(entry), _draft_spend_log(request, state, caller, spec, body)


def _response_headers(caller: Caller, spec: ModelSpec, cost: float | None, call_id: str | None) -> dict[str, str]:
    """common_request_processing.get_custom_headers (values of "None" are left out)."""
    headers = {
        "x-litellm-call-id": call_id or str(uuid.uuid4()),
        "x-litellm-model-id": spec.model_id,
        "x-litellm-model-api-base": MODEL_API_BASE,
        "x-litellm-version": LITELLM_VERSION,
        "x-litellm-key-spend": str((caller.key.spend if caller.key else 0.0) + (cost or 0.0)),
    }
    if cost is not None:
        headers["x-litellm-response-cost"] = str(cost)
    if caller.key is not None and caller.key.max_budget is not None:
        headers["x-litellm-key-max-budget"] = str(caller.key.max_budget)
    return headers


def _message(reply: scripted_model.Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"content": reply.text, "role": "assistant", "tool_calls": None, "function_call": None}
    if reply.tool_call is not None:
        message["tool_calls"] = [
            {
                "id": reply.tool_call.id,
                "type": "function",
                "function": {"name": reply.tool_call.name, "arguments": reply.tool_call.arguments_json},
            }
        ]
    return message


@post(["/v1/chat/completions", "/chat/completions"], status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any] | Stream:
    state, caller, body, spec, entry, row = await _admit_llm_call(request, "/chat/completions", "messages", "chat")
    reply = scripted_model.decide(body)
    prompt = scripted_model.prompt_tokens(body)
    completion = scripted_model.completion_tokens(reply)
    entry |= {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "tool_call": reply.tool_call.name if reply.tool_call else None,
        "reply": reply.text,
    }
    delay = reply.chunk_delay_s or state.settings.chunk_delay_s
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    row.request_id = completion_id  # get_spend_logs_id: the response's id
    created = int(time.time())
    if body.get("stream"):
        fault: Fault | None = request.state.get("fault")
        return Stream(
            _stream_body(
                state,
                caller,
                spec,
                _chunks(spec, reply, completion_id, created),
                entry,
                row,
                include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
                delay=delay,
                drop_after=fault.drop_after_chunks if fault is not None else None,
            ),
            media_type="text/event-stream",
            headers=_response_headers(caller, spec, None, row.litellm_call_id),
        )
    if delay:
        await asyncio.sleep(delay * max(1, len(reply.text_chunks())))
    cost = spec.cost(prompt, completion)
    async with state.lock:
        headers = _response_headers(caller, spec, cost, row.litellm_call_id)
        charge(state, caller, cost, row, prompt_tokens=prompt, completion_tokens=completion)
        entry |= {"cost": cost, "completed": True}
    payload = {
        "id": completion_id,
        "created": created,
        "model": spec.model_name,
        "object": "chat.completion",
        "system_fingerprint": None,
        "choices": [{"finish_reason": reply.finish_reason, "index": 0, "message": _message(reply)}],
        "usage": {"completion_tokens": completion, "prompt_tokens": prompt, "total_tokens": prompt + completion},
    }
    return Response(payload, headers=headers)


def _chunks(spec: ModelSpec, reply: scripted_model.Reply, completion_id: str, created: int) -> list[dict[str, Any]]:
    """The reply as OpenAI chat.completion.chunk objects: text word by word, or one tool call whose
    JSON arguments arrive in pieces; the last chunk carries the finish_reason."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "created": created,
            "model": spec.model_name,
            "object": "chat.completion.chunk",
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    chunks: list[dict[str, Any]] = []
    if reply.tool_call is not None:
        call = reply.tool_call
        head = {"index": 0, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        chunks.append(chunk({"role": "assistant", "content": None, "tool_calls": [head]}))
        arguments = call.arguments_json
        step = max(1, len(arguments) // 3)
        for start in range(0, len(arguments), step):
            piece = {"index": 0, "function": {"arguments": arguments[start : start + step]}}
            chunks.append(chunk({"tool_calls": [piece]}))
    else:
        chunks.append(chunk({"role": "assistant", "content": ""}))
        chunks.extend(chunk({"content": word}) for word in reply.text_chunks())
    chunks.append(chunk({}, reply.finish_reason))
    return chunks


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _sse(data: object) -> bytes:
    # proxy_server._serialize_streaming_chunk: model_dump_json(exclude_none=True), compact.
    return b"data: " + json.dumps(_without_nulls(data), separators=(",", ":")).encode() + b"\n\n"


async def _stream_body(
    state: DoubleState,
    caller: Caller,
    spec: ModelSpec,
    chunks: list[dict[str, Any]],
    entry: dict[str, Any],
    row: SpendLogRow,
    *,
    include_usage: bool,
    delay: float,
    drop_after: int | None,
) -> AsyncIterator[bytes]:
    """Sends the chunks, charges the call, then the usage chunk and [DONE]. A stream cut short
    (client gone, injected drop) is charged for the prompt and the text already sent; its spend-log
    row is a failure row keyed by the litellm_call_id, with that same charge."""
    sent: list[str] = []
    charged = False
    error: BaseException | None = None
    try:
        for index, chunk in enumerate(chunks):
            if drop_after is not None and index >= drop_after:
                raise ConnectionAbortedError("litellm double: stream dropped by an injected fault")
            if delay and index > 0:
                await asyncio.sleep(delay)
            delta = chunk["choices"][0]["delta"]
            sent.append(delta.get("content") or "")
            sent.extend(c["function"].get("name", "") + c["function"]["arguments"] for c in delta.get("tool_calls", []))
            row.completionStartTime = row.completionStartTime or _to_ms(state.now())
            yield _sse(chunk)
        prompt, completion = entry["prompt_tokens"], entry["completion_tokens"]
        cost = spec.cost(prompt, completion)
        # no await inside: atomic on the event loop
        charge(state, caller, cost, row, prompt_tokens=prompt, completion_tokens=completion)
        charged = True
        entry |= {"cost": cost, "completed": True}
        if include_usage:
            usage: dict[str, Any] = {"completion_tokens": completion, "prompt_tokens": prompt}
            usage["total_tokens"] = prompt + completion
            if state.settings.include_cost_in_streaming_usage:
                usage["cost"] = cost  # _inject_cost_into_usage_dict
            yield _sse({**chunks[-1], "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"
    except BaseException as exc:  # GeneratorExit/CancelledError when the client goes away
        error = exc
        raise
    finally:
        if not charged:
            completion = scripted_model.count_tokens("".join(sent))
            cost = spec.cost(entry["prompt_tokens"], completion)
            row.request_id = row.litellm_call_id or row.request_id  # no response object: the call id
            charge(
                state,
                caller,
                cost,
                row,
                prompt_tokens=entry["prompt_tokens"],
                completion_tokens=completion,
                error=error or ConnectionAbortedError("stream ended early"),
            )
            entry |= {
                "cost": cost,
                "completion_tokens": completion,
                "total_tokens": entry["prompt_tokens"] + completion,
            }


@post(["/v1/embeddings", "/embeddings"], status_code=200)
async def embeddings(request: Request[Any, Any, Any]) -> Response[Any]:
    state, caller, body, spec, entry, row = await _admit_llm_call(request, "/embeddings", "input", "embedding")
    texts = scripted_model.embedding_inputs(body["input"])
    dims = int(body.get("dimensions") or spec.output_vector_size or scripted_model.EMBEDDING_DIMS)
    tokens = sum(scripted_model.count_tokens(t) for t in texts)
    cost = spec.cost(tokens, 0)
    data = []
    for index, text in enumerate(texts):
        vector = scripted_model.embed(text, dims)
        # The openai SDK asks for base64 by default: little-endian float32, base64-encoded.
        encoded: Any = (
            base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            if body.get("encoding_format") == "base64"
            else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    async with state.lock:
        headers = _response_headers(caller, spec, cost, row.litellm_call_id)
        charge(state, caller, cost, row, prompt_tokens=tokens, completion_tokens=0)
        entry |= {"prompt_tokens": tokens, "total_tokens": tokens, "cost": cost, "completed": True}
    payload = {
        "object": "list",
        "data": data,
        "model": spec.model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Response(payload, headers=headers)


# ---------------------------------------------------------------------------------------------
# Test control (/_double/*, master key only)


def _require_master(request: Request[Any, Any, Any]) -> DoubleState:
    state = _state(request)
    caller = authenticate(state, request)
    if not caller.is_admin:
        raise _auth_error(f"Authentication Error, {request.url.path} is only for the master key")
    return state


@get("/_double/requests")
async def list_requests(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    return list(_require_master(request).requests)


@delete("/_double/requests", status_code=200)
async def clear_requests(request: Request[Any, Any, Any]) -> dict[str, int]:
    state = _require_master(request)
    cleared = len(state.requests)
    state.requests.clear()
    return {"deleted": cleared}


@post("/_double/faults", status_code=200)
async def add_faults(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    """Body: one fault or a list, e.g. {"route": "/v1/chat/completions", "status": 500, "count": 2}."""
    state = _require_master(request)
    try:
        raw = msgspec.json.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise _validation_error([], str(exc)) from exc
    items = [dict(item) for item in (raw if isinstance(raw, list) else [raw]) if isinstance(item, dict)]
    for item in items:  # accept the obvious spellings too
        for alias, name in (("status_code", "status"), ("delay_s", "delay"), ("times", "count")):
            if alias in item:
                item.setdefault(name, item.pop(alias))
    try:
        faults = msgspec.convert(items, list[Fault])
    except msgspec.ValidationError as exc:
        raise _validation_error([], str(exc)) from exc
    state.faults.extend(faults)
    return [msgspec.to_builtins(f) for f in state.faults]


@get("/_double/faults")
async def list_faults(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    return [msgspec.to_builtins(f) for f in _require_master(request).faults]


@delete("/_double/faults", status_code=200)
async def clear_faults(request: Request[Any, Any, Any]) -> dict[str, int]:
    state = _require_master(request)
    cleared = len(state.faults)
    state.faults.clear()
    return {"deleted": cleared}


@post("/_double/spend", status_code=200)
async def set_spend(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Body: {"user_id": ..., "spend": 1.5} (the user's spend) or {"key": "sk-...", "spend": ...}."""
    state = _require_master(request)
    body = await _json_body(request)
    if not isinstance(body.get("spend"), int | float):
        raise _validation_error(["spend"], "Input should be a valid number")
    async with state.lock:
        if "key" in body:
            row = state.keys.get(_hash_key(str(body["key"])))
            if row is None:
                raise ProxyError(404, "Key not found in database", "not_found_error", "key")
            row.spend = float(body["spend"])
            state.save()
            return render_key(row)
        user = state.user(body.get("user_id"))
        if user is None:
            raise _management_error(404, f"User {body.get('user_id')} not found")
        user.spend = float(body["spend"])
        state.save()
        return render_user(user)


# ---------------------------------------------------------------------------------------------
# App


async def _apply_fault(request: Request[Any, Any, Any]) -> Response[Any] | Stream | None:
    """before_request: the next matching injected fault, if any (never for /_double/)."""
    if request.url.path.startswith("/_double/"):
        return None
    state = _state(request)
    key = presented_key(request)
    key_row = state.keys.get(_hash_key(key)) if key else None
    user_id = key_row.user_id if key_row is not None else None
    fault = state.take_fault(request.url.path, user_id)
    if fault is None:
        return None
    if fault.delay:
        await asyncio.sleep(fault.delay)
    if fault.drop_after_chunks is not None:
        request.state["fault"] = fault  # the chat handler drops the stream part-way
        return None
    if not fault.fails:
        return None  # a pure delay
    response = None if fault.drop else _fault_response(fault)
    if request.url.path.endswith(("/chat/completions", "/embeddings")):
        entry = state.log(_log_entry(request, await _json_body(request), state.now()))
        status_code = response.status_code if response is not None else None
        entry |= {"litellm_user_id": user_id, "status_code": status_code, "fault": _fault_summary(fault)}
    if response is None:
        # Uvicorn answers 500 to an app that fails before responding, so a "drop" sends the headers
        # and then aborts the body: clients see a connection closed mid-response.
        return Stream(_dropped_body(), media_type="application/json")
    return response


def create_app(settings: DoubleSettings | None = None) -> Litestar:
    state = DoubleState(settings=settings or DoubleSettings())
    state.load()
    return Litestar(
        route_handlers=[
            user_new,
            user_info,
            user_update,
            user_delete,
            key_info,
            key_generate,
            spend_logs,
            model_info,
            list_models,
            health_liveliness,
            health_readiness,
            chat_completions,
            embeddings,
            list_requests,
            clear_requests,
            add_faults,
            list_faults,
            clear_faults,
            set_spend,
        ],
        before_request=_apply_fault,
        exception_handlers={ProxyError: _on_proxy_error, DetailError: _on_detail_error},
        state=State({"double": state}),
        openapi_config=None,
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4000)
    parser.add_argument("--master-key", default=os.environ.get("LITELLM_MASTER_KEY", DEFAULT_MASTER_KEY))
    parser.add_argument("--state-file", type=Path, default=None, help="JSON file that keeps users/keys")
    parser.add_argument("--budget-exceeded-status-code", type=int, default=422)
    parser.add_argument("--no-cost-in-streaming-usage", action="store_true")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument(
        "--spend-logs-batch-write",
        type=float,
        default=float(os.environ.get("PROXY_BATCH_WRITE_AT", DEFAULT_SPEND_LOGS_BATCH_WRITE_S)),
        help="seconds between spend-log batch writes (env PROXY_BATCH_WRITE_AT, LiteLLM's name); 0 = at once",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    settings = DoubleSettings(
        master_key=args.master_key,
        state_file=args.state_file,
        budget_exceeded_status_code=args.budget_exceeded_status_code,
        include_cost_in_streaming_usage=not args.no_cost_in_streaming_usage,
        chunk_delay_s=args.chunk_delay,
        spend_logs_batch_write_s=args.spend_logs_batch_write,
    )
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
