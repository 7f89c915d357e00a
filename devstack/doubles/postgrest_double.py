"""Test double for PostgREST, Supabase's Data API (``<SUPABASE_URL>/rest/v1``), which cannot run here (no PostgREST
binary on PyPI, apt or npm).

It serves exactly what the reference web client sends through supabase-js (examples/web/src/data.ts), with the
requests, SQL and answers of PostgREST 16 (the Supabase CLI 3.1.0 runs postgrest v16.5 locally; the shapes are
read from PostgREST's source at v16.2):

- ``GET /<table>``: ``select`` with columns (``*``, ``alias:column``) and resources embedded through a foreign key
  (``rel(...)``, ``alias:rel!hint(...)``, nested): a to-one relationship as an object or null, a to-many one as an
  array, decided from the foreign key's uniqueness as PostgREST's schema cache decides it; filters
  ``eq neq gt gte lt lte`` and ``is`` (``not.`` too) on the table's columns; ``order=a.desc,b.asc.nullslast``;
  ``limit`` and ``offset`` (rows capped at ``db-max-rows``, Supabase's 1000); PostgREST's ``Content-Range``.
- ``POST /rpc/<function>`` with a JSON object of named arguments, the overload chosen by the argument names as
  PostgREST chooses it.
- Errors in PostgREST's body (``code``, ``message``, ``details``, ``hint``) with its statuses and headers: token
  errors (PGRST301/303, 401 with ``WWW-Authenticate``), Postgres errors mapped as PostgREST maps them (``22023``
  400, ``42501`` 401 for ``anon`` and 403 for a signed-in role, ...), unknown tables (PGRST205), relationships
  (PGRST200/201), functions (PGRST202) and columns (Postgres's ``42703``, which PostgREST passes on).
Everything else PostgREST does (writes, other operators, ``and``/``or``, casts, JSON paths, aggregates, spreads,
embedded filters and orders, counts, ``Range``, singular responses, functions called with GET, many-to-many
embeds, OpenAPI) is refused with PostgREST's "Feature not implemented" (PGRST127) naming this double, never
answered differently. Not reproduced at all: schema cache reloads (the cache is read once), views' relationships,
and the responses functions shape themselves (``RAISE SQLSTATE 'PGRST'``, the ``response.*`` settings).

A request runs as PostgREST runs it, so grants and row level security are the database's own:
1. the ``Authorization`` bearer token is verified with the project's keys (the JWKS the GoTrue double publishes
   and, when given, a legacy HS256 secret: PostgREST's ``jwt-secret`` on Supabase), ``exp``/``nbf``/``iat``
   checked with PostgREST's 30 s of skew; its ``role`` claim is the database role (``anon`` without a token);
2. on a connection as ``authenticator`` (PostgREST's login role), one transaction (read-only for reads and stable
   functions) first sets what PostgREST's ``txVarQuery`` sets: ``search_path`` (``public, extensions`` as on
   Supabase), the role's own settings (its ``statement_timeout``), ``role``, ``request.jwt.claims`` (with
   ``role``), ``request.method``, ``request.path``, ``request.headers``, ``request.cookies`` and, for a function
   call, the function's own hoisted settings (``statement_timeout``: PostgREST 12.2+). Not the
   per-claim ``request.jwt.claim.sub``: PostgREST dropped those in v12 (``db-use-legacy-gucs``);
3. then one statement shaped like PostgREST's (``WITH pgrst_source AS (...) SELECT ... json_agg(...)``): Postgres
   writes the JSON, as it does behind PostgREST.
The only identifiers in that SQL are names read from pg_catalog into a schema cache at the first request (tables,
columns and their types, foreign keys and functions in ``public``; role settings), each quoted; every value from
the request is a bind parameter. A name missing from the cache is refused with the error PostgREST (or Postgres)
gives for it. Inputs are bounded (query string, parameters, select items, nesting, body, token).

Supabase's API gateway in front of it (``apikey``, one origin with Auth) is devstack/doubles/api_gateway.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg
import jwt

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SCHEMA = "public"  # db-schemas: the one schema exposed
SEARCH_PATH = '"public", "extensions"'  # the schema, then Supabase's db-extra-search-path
ANON_ROLE = "anon"  # db-anon-role
MAX_ROWS = 1000  # db-max-rows, as Supabase sets it
CLOCK_SKEW_SECONDS = 30  # PostgREST's allowance on exp/nbf/iat
POOL_SIZE = 4
# Bounds on what one request may ask (PostgREST leaves them to the gateway and the database).
MAX_QUERY_STRING = 8192
MAX_QUERY_PARAMS = 64
MAX_SELECT_ITEMS = 100
MAX_EMBED_DEPTH = 3
MAX_BODY_BYTES = 64 * 1024
MAX_TOKEN_BYTES = 8192
_DOUBLE = "devstack/doubles/postgrest_double.py"
_CORS_EXPOSED = (
    "Content-Encoding, Content-Location, Content-Range, Content-Type, Date, Location, Server, Transfer-Encoding, "
    "Range-Unit"
)
# PostgREST's filter operators: the ones this double runs, then the ones it refuses as not implemented.
_OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_IS_VALUES = {"null": "NULL", "not_null": "NOT NULL", "true": "TRUE", "false": "FALSE", "unknown": "UNKNOWN"}
_OTHER_OPERATORS = {"like", "ilike", "match", "imatch", "in", "cs", "cd", "ov", "sl", "sr", "nxr", "nxl", "adj"}
_OTHER_OPERATORS |= {"fts", "plfts", "phfts", "wfts", "isdistinct", "all", "any"}
_NAME = re.compile(r"[\w$]+")


class PgrstError(Exception):
    """An answer in PostgREST's error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        hint: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.hint = status, code, message, details, hint
        self.headers = [*headers, ("Proxy-Status", f"PostgREST; error={code}")]

    def payload(self) -> bytes:
        body = {"code": self.code, "details": self.details, "hint": self.hint, "message": self.message}
        return json.dumps(body, separators=(",", ":")).encode()  # compact, as PostgREST (Aeson) writes it


def not_implemented(what: str) -> PgrstError:
    return PgrstError(
        400, "PGRST127", "Feature not implemented", f"{what} is not implemented by the double ({_DOUBLE})"
    )


def _parse_error(parameter: str, value: str, position: int, details: str) -> PgrstError:
    # PostgREST's QPError: the parser's name and position, then what it expected.
    return PgrstError(400, "PGRST100", f'"failed to parse {parameter} ({value})" (line 1, column {position})', details)


def _jwt_decode_error(message: str, details: str | None = None) -> PgrstError:
    header = ("WWW-Authenticate", f'Bearer error="invalid_token", error_description={json.dumps(message)}')
    return PgrstError(401, "PGRST301", message, details, headers=[header])


def _jwt_claims_error(message: str) -> PgrstError:
    header = ("WWW-Authenticate", f'Bearer error="invalid_token", error_description={json.dumps(message)}')
    return PgrstError(401, "PGRST303", message, headers=[header])


def _undefined_column(relation: str, column: str) -> PgrstError:
    # What Postgres answers for "<relation>"."<column>", which PostgREST passes on (42703 -> 400).
    return PgrstError(400, "42703", f"column {relation}.{column} does not exist")


def _status_of(sqlstate: str, message: str, signed_in: bool) -> int:
    """PostgREST's mapping of a Postgres error to an HTTP status (Error.hs: mapSQLtoHTTP)."""
    exact = {
        "23503": 409,
        "23505": 409,
        "25006": 405,
        "53400": 500,
        "57P01": 503,
        "P0001": 400,
        "42P01": 404,
        "42P17": 500,
    }
    if sqlstate in exact:
        return exact[sqlstate]
    if sqlstate == "21000":
        return 400 if message.endswith("requires a WHERE clause") else 500
    if sqlstate == "22023":  # a token's role that does not exist is the caller's fault
        return 401 if message.startswith("role") and message.endswith("does not exist") else 400
    if sqlstate == "42883":
        return 406 if message.startswith("function xmlagg(") else 404
    if sqlstate == "42501":
        return 403 if signed_in else 401
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    by_class = {"08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500, "39": 500}
    by_class |= {"3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500}
    by_class |= {"P0": 500, "XX": 500}
    return by_class.get(sqlstate[:2], 400)


def ident(name: str) -> str:
    """A quoted identifier. Only ever given names read from pg_catalog."""
    return '"' + name.replace('"', '""') + '"'


def authenticator_url(database_url: str) -> str:
    """``database_url`` as PostgREST's login role, ``authenticator`` (local clusters trust it without a password)."""
    parts = urlsplit(database_url)
    host = parts.hostname or "127.0.0.1"
    return urlunsplit(parts._replace(netloc=f"authenticator@{host}:{parts.port or 5432}"))


# -- the schema cache ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relationship:
    """A foreign key seen from ``table``: to ``foreign_table`` through (column, foreign column) pairs."""

    table: str
    foreign_table: str
    constraint: str
    columns: tuple[tuple[str, str], ...]
    cardinality: str  # many-to-one | one-to-many | one-to-one
    is_self: bool

    @property
    def to_one(self) -> bool:
        return self.cardinality != "one-to-many"


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    required: bool
    variadic: bool


@dataclass(frozen=True)
class Function:
    name: str
    params: tuple[Param, ...]
    returns_set: bool
    returns_composite: bool
    volatile: bool
    # Its own settings that PostgREST (12.2+) applies to the call's transaction (see HOISTED_SETTINGS).
    settings: tuple[tuple[str, str], ...] = ()


@dataclass
class SchemaCache:
    tables: dict[str, dict[str, str]] = field(default_factory=dict)  # table -> column -> type
    relationships: dict[str, list[Relationship]] = field(default_factory=dict)
    functions: dict[str, list[Function]] = field(default_factory=dict)
    role_settings: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


_TABLES_SQL = """
select c.relname, a.attname, pg_catalog.format_type(a.atttypid, null) as type
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
left join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
where n.nspname = $1 and c.relkind in ('r', 'v', 'm', 'f', 'p')
order by c.relname, a.attnum
"""
# PostgREST's allM2OandO2ORels, for foreign keys between two tables of the schema: one-to-one when the foreign
# key's columns are exactly those of a primary key or unique constraint.
_FOREIGN_KEYS_SQL = """
select c.conname, t.relname as table_name, f.relname as foreign_table,
  array(select a.attname from unnest(c.conkey) with ordinality k(num, ord)
        join pg_catalog.pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.num order by k.ord) as columns,
  array(select a.attname from unnest(c.confkey) with ordinality k(num, ord)
        join pg_catalog.pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.num order by k.ord) as fcolumns,
  exists (select 1 from pg_catalog.pg_constraint u
          where u.conrelid = c.conrelid and u.contype in ('p', 'u')
            and (select array_agg(x order by x) from unnest(u.conkey) x)
              = (select array_agg(x order by x) from unnest(c.conkey) x)) as one_to_one
from pg_catalog.pg_constraint c
join pg_catalog.pg_class t on t.oid = c.conrelid
join pg_catalog.pg_class f on f.oid = c.confrelid
join pg_catalog.pg_namespace tn on tn.oid = t.relnamespace
join pg_catalog.pg_namespace fn on fn.oid = f.relnamespace
where c.contype = 'f' and c.conparentid = 0 and tn.nspname = $1 and fn.nspname = $1
order by c.conrelid, c.conname
"""
# PostgREST's db-hoisted-tx-settings default (Config.hs: defaultHoistedAllowList): a called function's own value of
# one of these (`create function ... set statement_timeout = '2s'`) is set for the call's transaction, last, because
# a SET clause takes effect only once the statement (and its timer) has started.
HOISTED_SETTINGS = frozenset({"statement_timeout", "plan_filter.statement_cost_limit", "default_transaction_isolation"})
_FUNCTIONS_SQL = """
select p.proname, p.provolatile::text as volatility, p.proretset,
  (r.typtype = 'c' or p.prorettype = 'pg_catalog.record'::pg_catalog.regtype) as returns_composite,
  p.pronargdefaults,
  coalesce(p.proargnames, array[]::text[]) as arg_names,
  coalesce(p.proargmodes::text[], array[]::text[]) as arg_modes,
  array(select pg_catalog.format_type(u.t, null)
        from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) with ordinality u(t, n)
        order by u.n) as arg_types,
  coalesce(p.proconfig, array[]::text[]) as config
from pg_catalog.pg_proc p
join pg_catalog.pg_namespace n on n.oid = p.pronamespace
join pg_catalog.pg_type r on r.oid = p.prorettype
where n.nspname = $1 and p.prokind = 'f'
"""
# PostgREST's queryRoleSettings (PostgreSQL 15+): the settings of the roles the login role may become, applied per
# request because SET ROLE does not apply them.
_ROLE_SETTINGS_SQL = """
with role_setting as (
  select r.rolname, unnest(r.rolconfig) as setting
  from pg_catalog.pg_auth_members m join pg_catalog.pg_roles r on r.oid = m.roleid
  where m.member = current_user::regrole::oid
), kv as (
  select rolname, substr(setting, 1, strpos(setting, '=') - 1) as key,
         lower(substr(setting, strpos(setting, '=') + 1)) as value
  from role_setting
)
select kv.rolname, kv.key, kv.value
from kv join pg_catalog.pg_settings ps on ps.name = kv.key
  and (ps.context = 'user' or has_parameter_privilege(current_user::regrole::oid, ps.name, 'set'))
where kv.key <> 'default_transaction_isolation'
"""


async def load_schema_cache(
    conn: asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any], schema: str = SCHEMA
) -> SchemaCache:
    cache = SchemaCache()
    for row in await conn.fetch(_TABLES_SQL, schema):
        columns = cache.tables.setdefault(row["relname"], {})
        if row["attname"] is not None:
            columns[row["attname"]] = row["type"]
    for row in await conn.fetch(_FOREIGN_KEYS_SQL, schema):
        pairs = tuple(zip(row["columns"], row["fcolumns"], strict=True))
        table, foreign, one = row["table_name"], row["foreign_table"], row["one_to_one"]
        is_self = table == foreign
        forward = Relationship(table, foreign, row["conname"], pairs, "one-to-one" if one else "many-to-one", is_self)
        inverse = Relationship(
            foreign,
            table,
            row["conname"],
            tuple((b, a) for a, b in pairs),
            "one-to-one" if one else "one-to-many",
            is_self,
        )
        cache.relationships.setdefault(table, []).append(forward)
        cache.relationships.setdefault(foreign, []).append(inverse)
    for row in await conn.fetch(_FUNCTIONS_SQL, schema):
        function = _function(row)
        if function is not None:
            cache.functions.setdefault(function.name, []).append(function)
    for row in await conn.fetch(_ROLE_SETTINGS_SQL):
        cache.role_settings.setdefault(row["rolname"], []).append((row["key"], row["value"]))
    return cache


def _function(row: asyncpg.Record) -> Function | None:
    """A function callable with named arguments (its input parameters all named); None otherwise."""
    names, modes, types = list(row["arg_names"]), list(row["arg_modes"]), list(row["arg_types"])
    modes = modes or ["i"] * len(types)
    inputs = [(names[i] if i < len(names) else "", types[i], modes[i]) for i in range(len(types))]
    inputs = [arg for arg in inputs if arg[2] in ("i", "b", "v")]
    if any(not name for name, _, _ in inputs):
        return None  # a single unnamed parameter (json, text, ...): not implemented here
    optional_from = len(inputs) - row["pronargdefaults"]
    params = tuple(
        Param(name, type_, required=i < optional_from, variadic=mode == "v")
        for i, (name, type_, mode) in enumerate(inputs)
    )
    settings = tuple(
        (key, value)
        for key, _, value in (setting.partition("=") for setting in row["config"])
        if key in HOISTED_SETTINGS
    )
    return Function(
        row["proname"], params, row["proretset"], row["returns_composite"], row["volatility"] == "v", settings
    )


# -- the access token ----------------------------------------------------------------------------------------------


class Keys:
    """What PostgREST's ``jwt-secret`` holds on Supabase: the project's JWKS and, on projects that still have it, the
    legacy HS256 secret. A token is verified by a key of its ``alg`` (and ``kid`` when both name one)."""

    def __init__(self, jwks: dict[str, Any], hs256_secret: str | None = None) -> None:
        self.keys = [jwt.PyJWK(jwk) for jwk in jwks.get("keys", [])]
        if hs256_secret:
            secret = jwt.utils.base64url_encode(hs256_secret.encode()).decode()
            self.keys.append(jwt.PyJWK({"kty": "oct", "k": secret, "alg": "HS256"}))

    def claims(self, token: str) -> dict[str, Any]:
        """The token's claims once its signature and times are good, else PostgREST's error (Auth/Jwt.hs)."""
        if not token:
            raise _jwt_decode_error("Empty JWT is sent in Authorization header")
        parts = token.count(".") + 1
        if parts != 3:
            raise _jwt_decode_error(f"Expected 3 parts in JWT; got {parts}")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _jwt_decode_error("JWT cryptographic operation failed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg == "none":
            raise _jwt_decode_error(
                "Wrong or unsupported encoding algorithm", "JWT is unsecured but expected 'alg' was not 'none'"
            )
        payload = None
        for key in self.keys:
            if key.algorithm_name != alg or (kid is not None and key.key_id is not None and key.key_id != kid):
                continue
            try:
                payload = jwt.PyJWS().decode(token, key.key, algorithms=[alg])
                break
            except (jwt.PyJWTError, ValueError, TypeError):
                continue
        if payload is None:
            raise _jwt_decode_error("No suitable key or wrong key type", "None of the keys was able to decode the JWT")
        try:
            claims = json.loads(payload)
        except ValueError:
            claims = None
        if not isinstance(claims, dict):
            raise _jwt_claims_error("Parsing claims failed")
        _check_times(claims)
        return claims


def _check_times(claims: dict[str, Any]) -> None:
    now = int(time.time())
    # (claim, message, whether the claim's time is wrong when it is this far ahead of now)
    checks = (("exp", "JWT expired", False), ("nbf", "JWT not yet valid", True), ("iat", "JWT issued at future", True))
    for name, message, future_is_wrong in checks:
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _jwt_claims_error(f"The JWT '{name}' claim must be a number")
        wrong = value > now + CLOCK_SKEW_SECONDS if future_is_wrong else value < now - CLOCK_SKEW_SECONDS
        if wrong:
            raise _jwt_claims_error(message)
    audience = claims.get("aud")  # checked against jwt-aud only when set, which Supabase does not set
    if audience is not None and not (
        isinstance(audience, str) or (isinstance(audience, list) and all(isinstance(a, str) for a in audience))
    ):
        raise _jwt_claims_error("The JWT 'aud' claim must be a string or an array of strings")


def bearer_token(headers: dict[str, str]) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (scheme in any case); None without one."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


# -- the request's query string ------------------------------------------------------------------------------------


@dataclass
class Field:
    name: str
    alias: str | None = None


@dataclass
class Embed:
    target: str
    alias: str | None
    hint: str | None
    items: list[Field | Embed | None]  # None: ``*``


class _SelectParser:
    """PostgREST's ``select`` grammar, for what this double implements."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.count = text, 0, 0

    def fail(self, expected: str) -> PgrstError:
        found = f'unexpected "{self.text[self.pos]}"' if self.pos < len(self.text) else "unexpected end of input"
        return _parse_error("select parameter", self.text, self.pos + 1, f"{found} expecting {expected}")

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def name(self) -> str:
        self.skip_spaces()
        match = _NAME.match(self.text, self.pos)
        if self.peek('"'):
            raise not_implemented("A quoted name in select")
        if not match:
            raise self.fail("field name (* or [a..z0..9_$])")
        self.pos = match.end()
        self.skip_spaces()
        return match.group()

    def items(self, depth: int) -> list[Field | Embed | None]:
        if depth > MAX_EMBED_DEPTH:
            raise PgrstError(400, "PGRST100", f"select nests more than {MAX_EMBED_DEPTH} levels", _DOUBLE)
        items: list[Field | Embed | None] = []
        while True:
            self.count += 1
            if self.count > MAX_SELECT_ITEMS:
                raise PgrstError(400, "PGRST100", f"select has more than {MAX_SELECT_ITEMS} items", _DOUBLE)
            items.append(self.item(depth))
            self.skip_spaces()
            if not self.peek(","):
                return items
            self.pos += 1

    def item(self, depth: int) -> Field | Embed | None:
        self.skip_spaces()
        if self.peek("*"):
            self.pos += 1
            return None
        if self.peek("..."):
            raise not_implemented("A spread (...) in select")
        name, alias = self.name(), None
        if self.peek(":") and not self.peek("::"):
            self.pos += 1
            alias, name = name, self.name()
        if self.peek("::"):
            raise not_implemented("A cast (::) in select")
        if self.peek("->"):
            raise not_implemented("A JSON path (->) in select")
        hint = None
        if self.peek("!"):
            self.pos += 1
            hint = self.name()
            if hint in ("inner", "left") or self.peek("!"):
                raise not_implemented("A join type (!inner, !left) in select")
        if not self.peek("("):
            if hint is not None:
                raise self.fail('"("')
            return Field(name, alias)
        self.pos += 1
        self.skip_spaces()
        if self.peek(")"):
            raise not_implemented("An aggregate or an empty embedding in select")
        items = self.items(depth + 1)
        if not self.peek(")"):
            raise self.fail('"," or ")"')
        self.pos += 1
        return Embed(name, alias, hint, items)


def parse_select(text: str) -> list[Field | Embed | None]:
    parser = _SelectParser(text)
    items = parser.items(0)
    parser.skip_spaces()
    if parser.pos != len(text):
        raise parser.fail('"," or end of input')
    return items


def parse_order(value: str) -> list[tuple[str, str]]:
    """``order``'s terms as (column, SQL direction and nulls order); none for an empty ``order``."""
    terms = []
    for term in value.split(",") if value else []:
        name, *modifiers = term.strip().split(".")
        if "(" in name or "->" in name:
            raise not_implemented("An order on an embedded resource or a JSON path")
        if not _NAME.fullmatch(name) or len(modifiers) > 2:
            raise _parse_error("order", value, 1, 'expecting "asc", "desc", "nullsfirst" or "nullslast"')
        directions = {"asc": "ASC", "desc": "DESC"}
        nulls = {"nullsfirst": "NULLS FIRST", "nullslast": "NULLS LAST"}
        sql = []
        if modifiers and modifiers[0] in directions:
            sql.append(directions[modifiers.pop(0)])
        if modifiers and modifiers[0] in nulls:
            sql.append(nulls[modifiers.pop(0)])
        if modifiers:
            raise _parse_error("order", value, 1, 'expecting "asc", "desc", "nullsfirst" or "nullslast"')
        terms.append((name, " ".join(sql)))
    return terms


@dataclass
class Filter:
    column: str
    negated: bool
    operator: str
    value: str


def parse_filter(column: str, value: str) -> Filter:
    if "->" in column or "::" in column:
        raise not_implemented("A filter on a JSON path or a cast")
    operator, _, operand = value.partition(".")
    negated = operator == "not"
    if negated:
        operator, _, operand = operand.partition(".")
    if operator in _OPERATORS or (operator == "is" and operand in _IS_VALUES):
        return Filter(column, negated, operator, operand)
    # eq(any), like(all), ...: an operator with a quantifier
    if operator.split("(")[0] in _OTHER_OPERATORS or operator.split("(")[0] in _OPERATORS:
        raise not_implemented(f"The filter operator '{operator}'")
    raise _parse_error("filter", value, 1, 'expecting "not" or operator (eq, gt, ...)')


def _integer(value: str) -> int | None:
    """PostgREST reads ``limit``/``offset`` as integers and ignores what does not read as one."""
    try:
        number = int(value)
    except ValueError:
        return None
    return number if -(2**62) < number < 2**62 else None


# -- SQL -----------------------------------------------------------------------------------------------------------


class _Statement:
    """One statement's SQL text pieces and bind parameters."""

    def __init__(self, cache: SchemaCache) -> None:
        self.cache = cache
        self.params: list[Any] = []
        self.aliases = 0

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def column(self, table: str, relation: str, name: str) -> str:
        if name not in self.cache.tables[table]:
            raise _undefined_column(relation, name)
        return ident(name)

    def find_relationship(self, origin: str, embed: Embed) -> Relationship:
        """PostgREST's findRel: the target names a table, a foreign key or a foreign key's column; the hint, a
        foreign key or one of its columns."""
        target, hint = embed.target, embed.hint

        def single(rel: Relationship, side: int, name: str | None) -> bool:
            return len(rel.columns) == 1 and rel.columns[0][side] == name

        found = []
        for rel in self.cache.relationships.get(origin, []):
            if rel.is_self:
                if hint is None:
                    ok = (target == rel.foreign_table and rel.cardinality == "one-to-many") or (
                        single(rel, 0, target) and rel.cardinality == "many-to-one"
                    )
                else:
                    ok = target == rel.foreign_table and rel.cardinality == "one-to-many" and single(rel, 1, hint)
            elif hint is None:
                ok = target in (rel.foreign_table, rel.constraint) or single(rel, 0, target)
            else:
                ok = target == rel.foreign_table and (
                    hint == rel.constraint or single(rel, 0, hint) or single(rel, 1, hint)
                )
            if ok:
                found.append(rel)
        if len(found) == 1:
            return found[0]
        if not found:
            using = f"' using the hint '{hint}" if hint else ""
            raise PgrstError(
                400,
                "PGRST200",
                f"Could not find a relationship between '{origin}' and '{target}' in the schema cache",
                f"Searched for a foreign key relationship between '{origin}' and '{target}{using}' in the schema "
                f"'{SCHEMA}', but no matches were found.",
            )
        details = [
            {
                "cardinality": rel.cardinality,
                "embedding": f"{rel.table} with {rel.foreign_table}",
                "relationship": f"{rel.constraint} using {rel.table}({', '.join(a for a, _ in rel.columns)}) and "
                f"{rel.foreign_table}({', '.join(b for _, b in rel.columns)})",
            }
            for rel in found
        ]
        choices = ", ".join(f"'{rel.foreign_table}!{rel.constraint}'" for rel in found)
        raise PgrstError(
            300,
            "PGRST201",
            f"Could not embed because more than one relationship was found for '{origin}' and '{target}'",
            details,
            f"Try changing '{target}' to one of the following: {choices}. Find the desired relationship in the "
            "'details' key.",
        )

    def select(self, table: str, qi: str, relation: str, items: list[Field | Embed | None]) -> tuple[str, str]:
        """The select list and the joins of one level: its columns, and each embedded resource as PostgREST's
        ``LEFT JOIN LATERAL`` (``row_to_json`` for to-one, ``json_agg`` for to-many)."""
        selects, joins = [], []
        for item in items:
            if item is None:
                selects.append(f"{qi}.*")
            elif isinstance(item, Field):
                alias = f" AS {ident(item.alias)}" if item.alias else ""
                selects.append(f"{qi}.{self.column(table, relation, item.name)}{alias}")
            else:
                rel = self.find_relationship(table, item)
                self.aliases += 1
                child = f"{rel.foreign_table}_{self.aliases}"
                agg = ident(f"{table}_{rel.foreign_table}_{self.aliases}")
                condition = " AND ".join(
                    f"{ident(child)}.{ident(theirs)} = {qi}.{ident(ours)}" for ours, theirs in rel.columns
                )
                child_selects, child_joins = self.select(rel.foreign_table, ident(child), child, item.items)
                sub = (
                    f"SELECT {child_selects} FROM {ident(SCHEMA)}.{ident(rel.foreign_table)} AS {ident(child)}"
                    f"{child_joins} WHERE {condition}"
                )
                name = ident(item.alias or item.target)
                if rel.to_one:
                    joins.append(f" LEFT JOIN LATERAL ( {sub} ) AS {agg} ON TRUE")
                    selects.append(f"row_to_json({agg}.*)::jsonb AS {name}")
                else:
                    many = f"SELECT json_agg({agg})::jsonb AS {agg} FROM ( {sub} ) AS {agg}"
                    joins.append(f" LEFT JOIN LATERAL ( {many} ) AS {agg} ON TRUE")
                    selects.append(f"COALESCE( {agg}.{agg}, '[]') AS {name}")
        return ", ".join(selects), "".join(joins)

    def condition(self, table: str, qi: str, flt: Filter) -> str:
        column = f"{qi}.{self.column(table, table, flt.column)}"
        if flt.operator == "is":
            sql = f"{column} IS {_IS_VALUES[flt.value]}"
        else:
            # PostgREST sends the value untyped, for Postgres to read as the column's type: the same input
            # function (and error, 22P02) as a text value cast to that type.
            value_type = self.cache.tables[table][flt.column]
            sql = f"{column} {_OPERATORS[flt.operator]} CAST({self.param(flt.value)}::text AS {value_type})"
        return f"NOT {sql}" if flt.negated else sql


def _wrap(source: str, body: str) -> str:
    """PostgREST's outer statement (Statements.hs): the rows counted and aggregated to JSON by Postgres."""
    return (
        f"WITH pgrst_source AS ( {source} ) SELECT pg_catalog.count(_postgrest_t) AS page_total, "
        f"{body}::text AS body FROM ( SELECT * FROM pgrst_source ) _postgrest_t"
    )


def read_statement(cache: SchemaCache, table: str, query: list[tuple[str, str]]) -> tuple[str, list[Any], int]:
    """The SQL, bind parameters and offset of ``GET /<table>?<query>``."""
    if table not in cache.tables:
        raise PgrstError(404, "PGRST205", f"Could not find the table '{SCHEMA}.{table}' in the schema cache")
    statement = _Statement(cache)
    qi = f"{ident(SCHEMA)}.{ident(table)}"
    first: dict[str, str] = {}  # select, order, limit, offset: the first one counts, as in PostgREST
    filters = []
    for key, value in query:
        last = key.rsplit(".", 1)[-1]
        if "." in key and last in ("order", "limit", "offset", "and", "or"):
            raise not_implemented(f"'{key}' (on an embedded resource)")
        if key in ("and", "or", "not.and", "not.or"):
            raise not_implemented(f"The logic tree '{key}'")
        if key in ("select", "order", "limit", "offset"):
            first.setdefault(key, value)
        elif key in ("columns", "on_conflict"):
            continue  # only writes read them
        elif "." in key:
            raise not_implemented(f"A filter on an embedded resource ('{key}')")
        else:
            filters.append(parse_filter(key, value))
    limit = _integer(first.get("limit", ""))
    if limit is not None and limit < 0:
        raise PgrstError(
            416, "PGRST103", "Requested range not satisfiable", "Limit should be greater than or equal to zero."
        )
    offset = max(0, _integer(first.get("offset", "")) or 0)
    select, order = first.get("select") or "*", first.get("order", "")
    selects, joins = statement.select(table, qi, table, parse_select(select))
    where = [statement.condition(table, qi, flt) for flt in filters]
    terms = [f"{qi}.{statement.column(table, table, name)} {sql}".rstrip() for name, sql in parse_order(order)]
    rows = MAX_ROWS if limit is None else min(limit, MAX_ROWS)
    source = (
        f"SELECT {selects} FROM {qi}{joins}"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + (f" ORDER BY {', '.join(terms)}" if terms else "")
        + f" LIMIT {statement.param(rows)} OFFSET {statement.param(offset)}"
    )
    return _wrap(source, "coalesce(json_agg(_postgrest_t), '[]')"), statement.params, offset


def call_statement(cache: SchemaCache, name: str, args: dict[str, Any]) -> tuple[str, list[Any], Function]:
    """The SQL and bind parameters of ``POST /rpc/<name>`` with ``args``, and the function it calls."""
    keys = set(args)
    candidates = cache.functions.get(name, [])
    matching = [
        fn
        for fn in candidates
        if {p.name for p in fn.params if p.required} <= keys <= {p.name for p in fn.params} and (fn.params or not keys)
    ]
    if not matching:
        listed = ", ".join(sorted(keys))
        with_params = (
            f" with parameter{'s' if len(keys) > 1 else ''} {listed} or with a single unnamed json/jsonb parameter"
            if keys
            else " without parameters"
        )
        raise PgrstError(
            404,
            "PGRST202",
            f"Could not find the function {SCHEMA}.{name}({listed}) in the schema cache"
            if keys
            else f"Could not find the function {SCHEMA}.{name} without parameters in the schema cache",
            f"Searched for the function {SCHEMA}.{name}{with_params}, but no matches were found in the schema cache.",
        )
    if len(matching) > 1:
        described = ", ".join(
            f"{SCHEMA}.{fn.name}({', '.join(f'{p.name} => {p.type}' for p in fn.params)})" for fn in matching
        )
        raise PgrstError(
            300,
            "PGRST203",
            f"Could not choose the best candidate function between: {described}",
            hint="Try renaming the parameters or the function itself in the database so function overloading can "
            "be resolved",
        )
    function = matching[0]
    statement = _Statement(cache)
    given = [p for p in function.params if p.name in keys]
    call = f"{ident(SCHEMA)}.{ident(function.name)}("
    call += ", ".join(
        f"{'VARIADIC ' if p.variadic else ''}{ident(p.name)} := pgrst_body.{ident(p.name)}" for p in given
    )
    call += ")"
    scalar = not function.returns_composite
    target = f"(SELECT {call} pgrst_scalar) pgrst_call" if scalar else f"{call} pgrst_call"
    if given:
        typed = ", ".join(f"{ident(p.name)} {p.type}" for p in given)
        body = statement.param(json.dumps(args))
        source = (
            f"SELECT {'pgrst_call.pgrst_scalar' if scalar else 'pgrst_call.*'} "
            f"FROM (SELECT {body}::json AS json_data) pgrst_payload, "
            f"LATERAL (SELECT {', '.join(ident(p.name) for p in given)} FROM json_to_record(pgrst_payload.json_data) "
            f"AS _({typed}) LIMIT 1) pgrst_body, LATERAL {target}"
        )
    else:
        source = f"SELECT {'pgrst_call.pgrst_scalar' if scalar else 'pgrst_call.*'} FROM {target}"
    rows = "_postgrest_t.pgrst_scalar" if scalar else "_postgrest_t"
    body_sql = f"coalesce(json_agg({rows}), '[]')" if function.returns_set else f"coalesce(json_agg({rows})->0, 'null')"
    return _wrap(source, body_sql), statement.params, function


# -- the ASGI app ----------------------------------------------------------------------------------------------------


def cors_headers(headers: dict[str, str]) -> list[tuple[str, str]]:
    """PostgREST's CORS answer (Cors.hs, no server-cors-allowed-origins): any origin, its exposed headers."""
    if "origin" not in headers:
        return []
    return [("Access-Control-Allow-Origin", "*"), ("Access-Control-Expose-Headers", _CORS_EXPOSED)]


def preflight_headers(headers: dict[str, str]) -> list[tuple[str, str]]:
    requested = [h.strip() for h in headers.get("access-control-request-headers", "").split(",") if h.strip()]
    return [
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Methods", "GET, POST, PATCH, PUT, DELETE, OPTIONS"),
        ("Access-Control-Allow-Headers", ", ".join(["Authorization", *requested])),
        ("Access-Control-Max-Age", "86400"),
    ]


async def respond(send: Send, status: int, body: bytes, headers: Iterable[tuple[str, str]]) -> None:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, headers: dict[str, str]) -> bytes:
    if int(headers.get("content-length") or 0) > MAX_BODY_BYTES:
        raise PgrstError(413, "PGRST102", f"The request body is over {MAX_BODY_BYTES} bytes", _DOUBLE)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise PgrstError(400, "PGRST102", "The client went away before its body was read")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PgrstError(413, "PGRST102", f"The request body is over {MAX_BODY_BYTES} bytes", _DOUBLE)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


class PostgrestDouble:
    """The ASGI app. ``db_url``: the database as ``authenticator`` (see ``authenticator_url``)."""

    def __init__(self, db_url: str, keys: Keys) -> None:
        self.db_url, self.keys = db_url, keys
        self._pool: asyncpg.Pool[Any] | None = None
        self._cache: SchemaCache | None = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> tuple[asyncpg.Pool[Any], SchemaCache]:
        async with self._lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(self.db_url, min_size=1, max_size=POOL_SIZE)
            if self._cache is None:
                async with self._pool.acquire() as conn:
                    self._cache = await load_schema_cache(conn)
            return self._pool, self._cache

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await self.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["method"] == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers:
            await respond(send, 200, b"", preflight_headers(headers))
            return
        try:
            status, body, extra = await self.handle(scope, receive, headers)
        except PgrstError as error:
            status, body, extra = error.status, error.payload(), error.headers
        content_type = [("Content-Type", "application/json; charset=utf-8")]
        await respond(send, status, body, [*content_type, *extra, *cors_headers(headers)])

    async def handle(self, scope: Scope, receive: Receive, headers: dict[str, str]) -> tuple[int, bytes, list[Any]]:
        method, path = scope["method"], scope["path"]
        raw_query: bytes = scope.get("query_string", b"")
        if len(raw_query) > MAX_QUERY_STRING:
            raise PgrstError(414, "PGRST100", f"The query string is over {MAX_QUERY_STRING} bytes", _DOUBLE)
        # The token first: PostgREST's authentication runs before the request is read.
        role, claims = self.authenticate(headers)
        profile = headers.get("accept-profile" if method in ("GET", "HEAD") else "content-profile", SCHEMA)
        if profile != SCHEMA:
            hint = f"Only the following schemas are exposed: {SCHEMA}"
            raise PgrstError(406, "PGRST106", f"Invalid schema: {profile}", hint=hint)
        try:
            query = parse_qsl(raw_query.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_QUERY_PARAMS)
        except (UnicodeDecodeError, ValueError):
            message = f"The query string is not UTF-8 or has over {MAX_QUERY_PARAMS} parameters"
            raise PgrstError(400, "PGRST100", message, _DOUBLE) from None
        segments = path.strip("/").split("/")
        _check_accept(headers)
        if "count=" in headers.get("prefer", ""):
            raise not_implemented("Prefer: count")
        if "range" in headers:
            raise not_implemented("The Range header")
        pool, cache = await self._ready()
        if len(segments) == 1 and segments[0]:
            if method != "GET":
                raise _method_error(method, rpc=False)
            sql, params, offset = read_statement(cache, segments[0], query)
            readonly, function_settings = True, []
        elif len(segments) == 2 and segments[0] == "rpc" and segments[1]:
            if method != "POST":
                raise _method_error(method, rpc=True)
            if query:
                raise not_implemented("Query parameters on a function call")
            args = _json_object(await read_body(receive, headers))
            sql, params, function = call_statement(cache, segments[1], args)
            offset, readonly = 0, not function.volatile
            function_settings = list(function.settings)
        elif not segments[0]:
            raise not_implemented("The OpenAPI description (GET /)")
        else:
            raise PgrstError(404, "PGRST125", "Invalid path specified in request URL")
        request_headers = {k: v for k, v in headers.items() if k != "cookie"}
        settings = [
            ("search_path", SEARCH_PATH),
            *cache.role_settings.get(role, []),
            ("role", role),
            ("request.jwt.claims", json.dumps({**claims, "role": role})),
            ("request.method", method),
            ("request.path", path),
            ("request.headers", json.dumps(request_headers)),
            ("request.cookies", json.dumps(_cookies(headers.get("cookie", "")))),
            *function_settings,
        ]
        row = await self.run(pool, settings, sql, params, readonly, signed_in=role != ANON_ROLE)
        count = row["page_total"]
        content_range = f"{offset}-{offset + count - 1}/*" if count else "*/*"
        return 200, row["body"].encode(), [("Content-Range", content_range)]

    def authenticate(self, headers: dict[str, str]) -> tuple[str, dict[str, Any]]:
        token = bearer_token(headers)
        if token is None:
            return ANON_ROLE, {}
        if len(token) > MAX_TOKEN_BYTES:
            raise _jwt_decode_error("JWT cryptographic operation failed")
        claims = self.keys.claims(token)
        role = claims.get("role")
        if role is None:
            return ANON_ROLE, claims
        return (role if isinstance(role, str) else json.dumps(role)), claims

    async def run(
        self,
        pool: asyncpg.Pool[Any],
        settings: list[tuple[str, str]],
        sql: str,
        params: list[Any],
        readonly: bool,
        *,
        signed_in: bool,
    ) -> asyncpg.Record:
        """PostgREST's transaction: the request's settings (role settings before the role, as PostgREST orders
        them), then the statement."""
        names_and_values = [item for pair in settings for item in pair]
        set_sql = "select " + ", ".join(
            f"pg_catalog.set_config(${2 * i + 1}, ${2 * i + 2}, true)" for i in range(len(settings))
        )
        try:
            async with pool.acquire() as conn, conn.transaction(isolation="read_committed", readonly=readonly):
                await conn.execute(set_sql, *names_and_values)
                row: asyncpg.Record | None = await conn.fetchrow(sql, *params)
        except asyncpg.PostgresError as error:
            sqlstate, message = error.sqlstate or "XX000", str(error)
            status = _status_of(sqlstate, message, signed_in)
            detail, hint = getattr(error, "detail", None), getattr(error, "hint", None)
            www = [("WWW-Authenticate", "Bearer")] if status == 401 else []
            raise PgrstError(status, sqlstate, message, detail, hint, www) from None
        except (OSError, asyncpg.InterfaceError):
            raise PgrstError(503, "PGRST000", "Database connection error.") from None
        assert row is not None
        return row


def _method_error(method: str, *, rpc: bool) -> PgrstError:
    if rpc and method in ("GET", "HEAD"):
        return not_implemented("Calling a function with GET or HEAD")
    if rpc:
        return PgrstError(405, "PGRST101", f"Cannot use the {method} method on RPC")
    if method in ("HEAD", "POST", "PATCH", "PUT", "DELETE"):
        return not_implemented(f"{method} on a table")
    return PgrstError(405, "PGRST117", f"Unsupported HTTP method: {method}")


def _check_accept(headers: dict[str, str]) -> None:
    accept = headers.get("accept", "*/*")
    types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if any(t in ("application/json", "*/*", "application/*", "") for t in types):
        return
    if any(t.startswith("application/vnd.pgrst") for t in types):
        raise not_implemented(f"The media type {accept}")
    raise PgrstError(406, "PGRST107", f"None of these media types are available: {', '.join(types)}")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body) if body.strip() else {}
    except ValueError:
        raise PgrstError(400, "PGRST102", "Empty or invalid json") from None
    if not isinstance(value, dict):
        raise not_implemented("A function call whose body is not a JSON object")
    return value


def _cookies(header: str) -> dict[str, str]:
    try:
        cookie = SimpleCookie(header)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in cookie.items()}


def create_app(db_url: str, jwks: dict[str, Any], hs256_secret: str | None = None) -> PostgrestDouble:
    """The double on ``db_url`` (the database as ``authenticator``), trusting tokens signed by a key of ``jwks``
    (or with ``hs256_secret``)."""
    return PostgrestDouble(db_url, Keys(jwks, hs256_secret))
