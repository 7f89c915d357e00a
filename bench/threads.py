"""Threads at scale: history pages, the thread list and search on 10 million messages (issue 14's benchmark).

A dedicated Postgres (``devstack.postgres.LocalPostgres``, state in ``.devstack/run/bench-threads``, port 58322,
the devstack's settings: 128 MB shared_buffers, 4 MB work_mem) with our migrations (``devstack.migrate``) gets a
synthetic data set made by SQL, set-based (``generate_series``):

* ``--users`` (100,000) sign up through ``auth.users`` the way GoTrue writes them (INSERT with ``role = ''``, then
  UPDATE ``role = 'authenticated'``): our triggers create their profiles and default threads;
* ``--threads`` (1,000,000) threads and ``--messages`` (10,000,000) messages, one turn = a user message and its
  reply. User 1 is the **heavy user** (``--heavy-threads`` 5,000 threads, ``--heavy-messages`` 200,000 messages);
  the others are typical (~10 threads, ~100 messages: an activity weight per user, mean 1, spreads both). A user's
  messages fall on its threads by a Zipf-like law (the default thread largest); the turns of a thread are spaced
  in time, and messages are inserted in time order (a user's rows are scattered over the heap, as in production);
* text: words drawn from a vocabulary of 50,000 (the 100 commonest English words, ~190 everyday ones, then
  made-up ones) with a Zipf law (rank = floor(50001^u)); user messages ~15 words, replies ~60 (exponential
  tails); a rare word (``quetzalcoatlus``, 1 message in 50,000) and a phrase (``northern lights``, 1 in 2,000)
  are mixed in, and both are put once into the measured users' default threads;
* 2 % of the replies get feedback when ``public.message_feedback`` exists.

The non-unique indexes of ``messages`` and ``threads`` are dropped for the load and created again afterwards
from their own definitions (``pg_get_indexdef``), like a migration that creates them on a loaded table; then
``VACUUM (ANALYZE)``. Before measuring, the indexes of the data set are compared with those of an empty database
migrated from scratch: they must be the same. The data set stays on disk (one database per set of sizes, so a
``--scale 0.01`` try leaves the full one alone): ``--reuse`` takes it as it is, after applying any migration added
since (that cost is printed: a migration on a loaded table); it is built again when a migration it has was
edited since (the applied SQL is in ``supabase_migrations.schema_migrations``).

Measured, with ``/tmp/bench_running`` held (``mkdir``): the service's own statements (``service/chat/store.py``:
``messages_page``, ``search_messages``; ``service/threads/store.py``: ``threads_page``) through the service's own
pool (``service.db``: asyncpg, prepared statements), for the heavy user and a typical one, ``--runs`` (200) times
each after ``--warmup`` (20) runs not counted, one at a time (warm cache): history (newest 50 of a thread; newest
50 of everything; a deep keyset page of each), the thread list (first page and a deep page), search (a common
word, a rare word, a two-word phrase; first page of 20). Targets: history and thread list p95 <= 5 ms, search
p95 <= 50 ms. Then the size of every table and index they use. ``--explain`` adds EXPLAIN (ANALYZE, BUFFERS) of
each query as the service runs it (a prepared statement after 10 executions, so the plan cache's choice of a
generic plan is in it) and, for a statement that calls a PL/pgSQL function (search), of the function's
``return query`` with the call's values.

    .venv/bin/python -m bench.threads [--reuse] [--explain] [--runs 200] [--scale 1.0] [--build-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import banner, entry_point, median, ms, p95, print_table
from devstack.migrate import apply_migrations_async, discover_migrations
from devstack.postgres import REPO_ROOT, LocalPostgres
from service.chat import store as chat_store
from service.db import Database, create_pool
from service.settings import load_settings
from service.threads import store as thread_store

PORT = 58322
STATE_DIR = REPO_ROOT / ".devstack" / "run" / "bench-threads"
DATABASE = "bench_threads"
REFERENCE = "bench_threads_reference"  # migrations only: the index set the data set must have
LOCK = Path("/tmp/bench_running")
PAGE = 50  # the API's default page size; the service asks for one row more to know whether a page follows

HISTORY_TARGET_MS = 5.0
SEARCH_TARGET_MS = 50.0

# -- the vocabulary -----------------------------------------------------------------------------------------
# Rank 1-100: the commonest English words (most are English stop words); then everyday words; then made-up
# words of two or three consonant-vowel syllables, one per rank.
_WORDS = (
    "the of and to a in is you that it he was for on are as with his they i at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up other "
    "about out many then them these so some her would make like him into time has look two more write go see "
    "number no way could people my than first water been call who oil its now find long down day did get come "
    "made may part "
    "memory agent python code error function data table query index server client request response model token "
    "thread message search result page user account email password login system file folder image video music "
    "movie book story travel trip hotel flight city country northern southern lights weather rain snow summer "
    "winter spring autumn garden plant flower tree dog cat bird horse fish food recipe dinner lunch breakfast "
    "coffee tea wine beer bread cheese chicken pasta rice salad soup cake chocolate health doctor medicine sleep "
    "exercise running yoga gym weight diet job work office meeting project deadline manager team salary interview "
    "resume career school class teacher student exam homework math science history language english french "
    "spanish german guitar piano song concert game football soccer tennis chess money budget bank loan rent house "
    "apartment car bike train bus phone laptop screen keyboard battery internet network cloud backup update "
    "install version release bug feature test deploy database schema migration docker linux windows browser "
    "website design color font layout question answer idea plan goal habit friend family mother father sister "
    "brother child baby birthday wedding holiday gift party letter poem essay report summary translation explain "
    "example problem solution reason"
)
COMMON_WORDS = _WORDS.split()
VOCABULARY = 50_000
RARE_WORD = "quetzalcoatlus"
RARE_RATE = 1 / 50_000
PHRASE = "northern lights"
PHRASE_RATE = 1 / 2_000
COMMON_SEARCH = "time"  # rank 68, not an English stop word: in ~5 % of the messages
FEEDBACK_RATE = 0.02
_CONSONANTS = "bcdfghjklmnprstvz"  # 17 x 5 vowels = 85 syllables


def _syllable(digit: str) -> str:
    return f"substr('{_CONSONANTS}', 1 + ({digit}) % 17, 1) || substr('aeiou', 1 + ({digit}) / 17, 1)"


def word_sql(rank: str) -> str:
    """The word of a Zipf rank (an SQL integer expression used once per word) as SQL, without a table: a constant
    array for the common words, arithmetic for the made-up ones (a table lookup per word made the text ~5 times
    slower to make; a 50,000-word array read per word, far slower still)."""
    common = "{" + ",".join(COMMON_WORDS) + "}"
    return (
        f"case when {rank} <= {len(COMMON_WORDS)} then ('{common}'::text[])[{rank}] else "
        f"{_syllable(f'{rank} % 85')} || {_syllable(f'{rank} / 85 % 85')} || "
        f"case when {rank} >= 7225 then {_syllable(f'{rank} / 7225 % 85')} else '' end end"
    )


def words_sql(count: str) -> str:
    """``count`` Zipf-drawn words joined by spaces (a correlated subquery: ``count`` must refer to the row)."""
    draw = f"floor(power({VOCABULARY + 1}, random()))::int + 0 * g"
    return f"(select string_agg({word_sql('r')}, ' ') from (select {draw} as r from generate_series(1, {count}) g) w)"


# -- the data set ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    users: int
    threads: int
    messages: int
    heavy_threads: int
    heavy_messages: int

    @classmethod
    def scaled(cls, scale: float, args: argparse.Namespace) -> Sizes:
        def of(value: int, least: int) -> int:
            return max(least, round(value * scale))

        sizes = cls(
            users=of(args.users, 10),
            threads=of(args.threads, 100),
            messages=of(args.messages, 1000),
            heavy_threads=of(args.heavy_threads, 5),
            heavy_messages=of(args.heavy_messages, 100),
        )
        if sizes.heavy_messages % 2 or sizes.messages % 2:
            raise SystemExit("messages come in turns of two: --messages and --heavy-messages must be even")
        if sizes.threads - sizes.heavy_threads < sizes.users - 1:
            raise SystemExit("every typical user needs at least its default thread")
        typical_turns = (sizes.messages - sizes.heavy_messages) // 2
        if sizes.heavy_messages // 2 < sizes.heavy_threads or typical_turns < sizes.threads - sizes.heavy_threads:
            raise SystemExit("every thread needs at least one turn")
        return sizes

    @property
    def database(self) -> str:
        """One database per set of sizes: a quick small run leaves the full data set in place."""
        if self == FULL_SIZES:
            return DATABASE
        return f"{DATABASE}_{self.users}_{self.threads}_{self.messages}_{self.heavy_threads}_{self.heavy_messages}"


FULL_SIZES = Sizes(users=100_000, threads=1_000_000, messages=10_000_000, heavy_threads=5_000, heavy_messages=200_000)


async def timed(conn: asyncpg.Connection[Any], label: str, sql: str, *args: Any) -> str:
    print(f"  {label} ...", flush=True)
    started = time.monotonic()
    status = await conn.execute(sql, *args)
    print(f"  {label}: {time.monotonic() - started:.1f}s", flush=True)
    return status


# Signups as GoTrue writes them (devstack/gotrue.py: one user per call), set-based: INSERT with role '' and the
# metadata, then UPDATE role in the same transaction. The triggers create the profile and the default thread.
SIGN_UP = """
    insert into auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
        confirmation_token, recovery_token, email_change_token_new, email_change, raw_app_meta_data,
        raw_user_meta_data, is_super_admin, created_at, updated_at, is_anonymous)
    select '00000000-0000-0000-0000-000000000000', id, 'authenticated', '', 'bench-' || user_no || '@example.com',
        '$2a$10$abcdefghijklmnopqrstuuUl5W6yQ5m3J9rG0vS0k2c7fM5rFqYqS', signup_at, '', '', '', '',
        '{"provider": "email", "providers": ["email"]}', jsonb_build_object('full_name', 'Bench ' || user_no),
        false, signup_at, signup_at, false
    from bench.users order by user_no
"""

# Users: ids from their number (reproducible), signed up over the last year, an activity weight (Erlang-4, mean
# 1: how many threads and messages a typical user has, relative to the others).
USERS = """
    create table bench.users as
    select n as user_no, md5('bench-user-' || n)::uuid as id,
        case when n = 1 then now() - interval '365 days' else now() - interval '365 days' * random() end as signup_at,
        case when n = 1 then 0 else (-ln(1 - random()) - ln(1 - random()) - ln(1 - random()) - ln(1 - random())) / 4
        end as activity
    from generate_series(1, $1::int) n
"""

# Each typical user's extra threads (beyond the default one), in proportion to its activity, by cumulative
# rounding: the counts add up to exactly $1.
USER_PLAN = """
    create table bench.user_plan as
    with cum as (
        select u.*, sum(activity) over (order by user_no) as upto from bench.users u
    ), spread as (
        select cum.*, coalesce(lag(upto) over (order by user_no), 0) as before,
            (select max(upto) from cum) as total
        from cum
    )
    select user_no, id, signup_at, activity,
        case when user_no = 1 then $2::int - 1
        else (round($1::int * upto / total) - round($1::int * before / total))::int end as extra_threads
    from spread
"""

# One row per thread: rank 1 is the default thread (its id comes from the trigger), the others get ids now. A
# thread's share of its user's turns falls with its rank (1 / rank^0.8, the default thread largest); the turns
# of the heavy user's threads add up to $1 and those of the typical users to $2, again by cumulative rounding,
# every thread at least one. A thread starts at signup (default) or later, its turns `step` seconds apart
# (30 s .. hours), its reply `reply_after` seconds after the user's message; it ends before now.
THREAD_PLAN = """
    create table bench.thread_plan as
    with threads as (
        select u.user_no, u.id as user_id, u.signup_at, u.activity, r as thread_rank,
            case when r = 1 then d.id else gen_random_uuid() end as thread_id,
            power(r, -0.8) as shape
        from bench.user_plan u
        cross join lateral generate_series(1, 1 + u.extra_threads) r
        left join public.threads d on d.user_id = u.id and d.is_default and r = 1
    ), weighted as (
        select t.*, case when user_no = 1 then shape else activity * shape / sum(shape) over (partition by user_no)
            end as weight
        from threads t
    ), cum as (
        select w.*, sum(weight) over (partition by user_no = 1 order by user_no, thread_rank) as upto
        from weighted w
    ), spread as (
        select cum.*, coalesce(lag(upto) over (partition by user_no = 1 order by user_no, thread_rank), 0) as before,
            max(upto) over (partition by user_no = 1) as total,
            case when user_no = 1 then $1::bigint - count(*) over (partition by user_no = 1)
            else $2::bigint - count(*) over (partition by user_no = 1) end as extra
        from cum
    ), counted as (
        select s.*, 1 + (round(extra * upto / total) - round(extra * before / total))::int as turns,
            case when thread_rank = 1 then signup_at
            else signup_at + (now() - signup_at) * random() end as natural_start,
            60 + (-ln(1 - random())) * 1800 as gap
        from spread s
    ), timed as (
        select c.*, greatest(30, least(gap, extract(epoch from now() - natural_start) / turns)) as step
        from counted c
    )
    select user_no, user_id, thread_rank, thread_id, turns, step,
        least(natural_start, now() - make_interval(secs => turns * step + 60)) as start_at,
        least(step / 2, 3 + 20 * random()) as reply_after
    from timed
"""

THREADS = f"""
    insert into public.threads (id, user_id, is_default, title, title_source, letta_agent_id,
        letta_conversation_id, created_at, last_message_at)
    select p.thread_id, p.user_id, false, {words_sql("2 + p.turns % 4")}, 'generated', 'agent-' || p.user_id,
        'conv-' || p.thread_id, p.start_at,
        p.start_at + make_interval(secs => (p.turns - 1) * p.step + p.reply_after)
    from bench.thread_plan p where p.thread_rank > 1
    order by p.start_at
"""

DEFAULT_THREADS = f"""
    update public.threads t set created_at = p.start_at, title = {words_sql("2 + p.turns % 4")},
        title_source = 'generated',
        last_message_at = p.start_at + make_interval(secs => (p.turns - 1) * p.step + p.reply_after)
    from bench.thread_plan p where p.thread_rank = 1 and t.id = p.thread_id
"""

# Active profiles with an agent, as provisioning leaves them.
PROFILES = """
    update public.user_profiles p set agent_status = 'active', letta_agent_id = 'agent-' || p.id,
        litellm_user_id = p.id::text, model = 'openai/gpt-4o-mini', created_at = u.signup_at, last_active_at = now()
    from bench.users u where u.id = p.id
"""

# The messages whose turn starts in [$1, $2), in time order: turn k of a thread at start + (k-1) * step, its
# reply reply_after later. The text is drawn after the sort (it is the costly part).
MESSAGES = f"""
    insert into public.messages (id, user_id, thread_id, turn_id, role, content, status, prompt_tokens,
        completion_tokens, tokens_used, cost, cost_final, model, letta_run_id, letta_message_id, created_at)
    select gen_random_uuid(), s.user_id, s.thread_id, s.turn_id, s.role,
        {words_sql("s.words")}
            || case when random() < {RARE_RATE} then ' {RARE_WORD}' else '' end
            || case when random() < {PHRASE_RATE} then ' {PHRASE}' else '' end
            || case when s.marked then ' {RARE_WORD} {PHRASE}' else '' end,
        'complete',
        case when s.role = 'assistant' then 800 + s.words * 2 end,
        case when s.role = 'assistant' then (s.words * 1.3)::int end,
        case when s.role = 'assistant' then 800 + s.words * 2 + (s.words * 1.3)::int end,
        case when s.role = 'assistant' then round((800 + s.words * 3.3) * 0.00000015, 8) end,
        case when s.role = 'assistant' then true end,
        case when s.role = 'assistant' then 'openai/gpt-4o-mini' end,
        'run-' || s.turn_id, case when s.role = 'assistant' then 'message-' || gen_random_uuid() end,
        s.created_at
    from (
        select p.user_id, p.thread_id, md5(p.thread_id::text || k)::uuid as turn_id, r.role,
            p.start_at + make_interval(secs => (k - 1) * p.step + case when r.o = 1 then p.reply_after else 0 end)
                as created_at,
            case when r.o = 0 then least(300, 3 + floor(-ln(1 - random()) * 12))
            else least(1500, 10 + floor(-ln(1 - random()) * 50)) end::int as words,
            (r.o = 0 and k = 1 and p.marked) as marked
        from bench.thread_plan p
        cross join lateral generate_series(
            greatest(1, ceil(extract(epoch from $1::timestamptz - p.start_at) / p.step)::int + 1),
            least(p.turns, ceil(extract(epoch from $2::timestamptz - p.start_at) / p.step)::int)) k
        cross join (values (0, 'user'), (1, 'assistant')) r(o, role)
        where p.start_at < $2::timestamptz
          and p.start_at + make_interval(secs => (p.turns - 1) * p.step) >= $1::timestamptz
        order by created_at
    ) s
"""

FEEDBACK = f"""
    insert into public.message_feedback (message_id, user_id, rating, comment, created_at, updated_at)
    select id, user_id, case when random() < 0.8 then 'up' else 'down' end,
        case when random() < 0.2 then {words_sql("3 + (extract(epoch from created_at))::int % 10")} end,
        created_at + interval '1 minute', created_at + interval '1 minute'
    from public.messages where role = 'assistant' and random() < {FEEDBACK_RATE}
"""

# The non-unique indexes of the big tables, dropped for the load and created again from these definitions.
LOAD_INDEXES = """
    select i.indexrelid::regclass::text as name, pg_get_indexdef(i.indexrelid) as definition
    from pg_index i
    where i.indrelid in ('public.messages'::regclass, 'public.threads'::regclass) and not i.indisunique
    order by 1
"""

INDEX_SET = """
    select n.nspname || '.' || c.relname as table_name, pg_get_indexdef(i.indexrelid) as definition
    from pg_index i join pg_class c on c.oid = i.indrelid join pg_namespace n on n.oid = c.relnamespace
    where n.nspname in ('public', 'private', 'auth', 'net')
"""


async def build(conn: asyncpg.Connection[Any], sizes: Sizes) -> dict[str, Any]:
    """The data set, by SQL. Returns what the measurement needs (stored in bench.meta)."""
    await conn.execute("set maintenance_work_mem = '1GB'; set work_mem = '256MB'")
    await conn.execute("create schema bench; create table bench.meta (key text primary key, value jsonb)")
    # Autovacuum would compete with the load for the two cores; finish() turns it back on and vacuums.
    for table in ("public.messages", "public.threads"):
        await conn.execute(f"alter table {table} set (autovacuum_enabled = false)")

    await timed(conn, "plan: users", USERS, sizes.users)
    async with conn.transaction():
        await timed(conn, f"signups: {sizes.users:,} users through auth.users (triggers: profile, thread)", SIGN_UP)
        await conn.execute("update auth.users u set role = 'authenticated' from bench.users b where b.id = u.id")
    await timed(conn, "profiles active", PROFILES)
    extra = sizes.threads - sizes.heavy_threads - (sizes.users - 1)
    await timed(conn, "plan: threads per user", USER_PLAN, extra, sizes.heavy_threads)
    heavy_turns, typical_turns = sizes.heavy_messages // 2, (sizes.messages - sizes.heavy_messages) // 2
    await timed(conn, "plan: turns per thread", THREAD_PLAN, heavy_turns, typical_turns)

    # The typical user to measure: the median number of threads, and of messages closest to the median.
    typical = await conn.fetchrow("""
        with per_user as (
            select user_no, user_id, count(*) as threads, 2 * sum(turns) as messages
            from bench.thread_plan where user_no > 1 group by user_no, user_id
        ), medians as (
            select percentile_disc(0.5) within group (order by threads) as threads,
                percentile_disc(0.5) within group (order by messages) as messages from per_user
        )
        select p.user_no, p.user_id, p.threads, p.messages, m.threads as median_threads,
            m.messages as median_messages
        from per_user p, medians m where p.threads = m.threads
        order by abs(p.messages - m.messages), p.user_no limit 1
    """)
    assert typical is not None
    await conn.execute("alter table bench.thread_plan add column marked boolean not null default false")
    await conn.execute(
        "update bench.thread_plan set marked = true where thread_rank = 1 and user_no in (1, $1)", typical["user_no"]
    )
    await conn.execute("create index on bench.thread_plan (start_at)")
    await conn.execute("analyze bench.thread_plan")
    await timed(conn, "threads", THREADS)
    await timed(conn, "default threads: times and titles", DEFAULT_THREADS)
    return {
        "heavy_user": str(await conn.fetchval("select id from bench.users where user_no = 1")),
        "typical_user": str(typical["user_id"]),
        "typical": {k: typical[k] for k in ("threads", "messages", "median_threads", "median_messages")},
    }


async def load_messages(database_url: str, conn: asyncpg.Connection[Any], sizes: Sizes, workers: int = 2) -> None:
    """The messages, window by window in time order, on ``workers`` connections (one core each)."""
    first, last = await conn.fetchrow(
        "select min(start_at), max(start_at + make_interval(secs => turns * step)) from bench.thread_plan"
    )
    windows = 120
    span = (last - first) / windows
    bounds = [(first + span * i, first + span * (i + 1) if i < windows - 1 else last + span) for i in range(windows)]
    queue: asyncio.Queue[tuple[datetime, datetime]] = asyncio.Queue()
    for bound in bounds:
        queue.put_nowait(bound)
    started = time.monotonic()
    inserted = 0
    print(f"  messages: {sizes.messages:,} in {windows} time windows on {workers} connections ...", flush=True)

    async def worker() -> None:
        nonlocal inserted
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute("set work_mem = '256MB'")
            while not queue.empty():
                low, high = queue.get_nowait()
                status = await connection.execute(MESSAGES, low, high)
                inserted += int(status.split()[-1])
                done = windows - queue.qsize()
                if done % 10 == 0:
                    elapsed = time.monotonic() - started
                    print(f"    {inserted:,} messages ({done}/{windows} windows, {elapsed:.0f}s)", flush=True)
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(workers)))
    print(f"  messages: {inserted:,} in {time.monotonic() - started:.1f}s", flush=True)
    if inserted != sizes.messages:
        raise RuntimeError(f"{inserted} messages inserted, {sizes.messages} planned")


async def finish(conn: asyncpg.Connection[Any], dropped: Sequence[asyncpg.Record]) -> None:
    """Feedback, the indexes back, autovacuum back, VACUUM (ANALYZE)."""
    if await conn.fetchval("select to_regclass('public.message_feedback') is not null"):
        await timed(conn, f"feedback on {FEEDBACK_RATE:.0%} of the replies", FEEDBACK)
    for index in dropped:
        await timed(conn, f"index {index['name']}", index["definition"])
    for table in ("public.messages", "public.threads"):
        await conn.execute(f"alter table {table} reset (autovacuum_enabled)")
    await timed(conn, "vacuum (analyze)", "vacuum (analyze)")


async def build_data_set(pg: LocalPostgres, sizes: Sizes) -> dict[str, Any]:
    banner(f"building the data set: {sizes}")
    started = time.monotonic()
    pg.drop_database(sizes.database)
    pg.create_database(sizes.database)
    applied = await apply_migrations_async(pg.url(sizes.database))
    print(f"  migrations: {len(applied)} applied ({applied[-1]})", flush=True)
    conn = await asyncpg.connect(pg.url(sizes.database))
    try:
        dropped = await conn.fetch(LOAD_INDEXES)
        for index in dropped:
            await conn.execute(f"drop index {index['name']}")
        print(f"  dropped for the load: {', '.join(i['name'] for i in dropped)}", flush=True)
        meta = await build(conn, sizes)
        await load_messages(pg.url(sizes.database), conn, sizes)
        await conn.execute("drop table bench.thread_plan, bench.user_plan, bench.users")
        await finish(conn, dropped)
        meta.update(
            sizes=dataclasses.asdict(sizes),
            built_at=datetime.now().astimezone().isoformat(timespec="seconds"),
            build_seconds=round(time.monotonic() - started, 1),
            migrations=applied,
        )
        await conn.execute("insert into bench.meta select key, value from jsonb_each($1::jsonb)", json.dumps(meta))
    finally:
        await conn.close()
    print(f"data set built in {meta['build_seconds']:.0f}s", flush=True)
    return meta


async def stored_meta(pg: LocalPostgres, database: str) -> dict[str, Any] | None:
    if not pg.database_exists(database):
        return None
    conn = await asyncpg.connect(pg.url(database))
    try:
        if not await conn.fetchval("select to_regclass('bench.meta') is not null"):
            return None
        rows = await conn.fetch("select key, value from bench.meta")
        return {row["key"]: json.loads(row["value"]) for row in rows} or None
    finally:
        await conn.close()


async def changed_migrations(pg: LocalPostgres, database: str) -> list[str]:
    """Migrations whose file is no longer what was applied to the data set (the schema it has is not theirs)."""
    files = {m.version: m.path.read_text(encoding="utf-8") for m in discover_migrations()}
    conn = await asyncpg.connect(pg.url(database))
    try:
        rows = await conn.fetch("select version, name, statements from supabase_migrations.schema_migrations")
    finally:
        await conn.close()
    return [
        f"{r['version']}_{r['name']}"
        for r in rows
        if r["version"] in files and r["statements"] != [files[r["version"]]]
    ]


async def migrate_loaded(pg: LocalPostgres, database: str) -> None:
    """Migrations added since the data set was built, applied to it (timed: a migration on a loaded table)."""
    started = time.monotonic()
    applied = await apply_migrations_async(pg.url(database))
    if applied:
        conn = await asyncpg.connect(pg.url(database))
        try:
            await conn.execute("vacuum (analyze)")
        finally:
            await conn.close()
        print(
            f"  migrations added since the build, applied to the loaded data: {', '.join(applied)} "
            f"({time.monotonic() - started:.1f}s with VACUUM (ANALYZE))",
            flush=True,
        )


async def check_indexes(pg: LocalPostgres, database: str) -> None:
    """The data set's indexes must be exactly those of a database migrated from scratch."""
    pg.drop_database(REFERENCE)
    pg.create_database(REFERENCE)
    await apply_migrations_async(pg.url(REFERENCE))
    sets = []
    for name in (database, REFERENCE):
        conn = await asyncpg.connect(pg.url(name))
        try:
            sets.append({(r["table_name"], r["definition"]) for r in await conn.fetch(INDEX_SET)})
        finally:
            await conn.close()
    pg.drop_database(REFERENCE)
    extra, missing = sets[0] - sets[1], sets[1] - sets[0]
    if extra or missing:
        raise RuntimeError(f"the data set's indexes differ from the migrations': extra {extra}, missing {missing}")
    print(f"  indexes: the same {len(sets[0])} as a database migrated from scratch", flush=True)


# -- measuring ------------------------------------------------------------------------------------------------
@dataclass
class Case:
    group: str  # history, thread list, search
    label: str
    user: str  # heavy, typical
    target_ms: float
    call: Callable[[Any], Awaitable[Sequence[Any]]]  # the service's function, on a pool (or a Recorder)
    times: list[float] = dataclasses.field(default_factory=list)
    rows: int = 0


class Recorder:
    """Stands in for the pool to capture the statement a store function runs (for EXPLAIN)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self.calls.append((sql, args))
        return []

    async def fetchrow(self, sql: str, *args: Any) -> None:
        self.calls.append((sql, args))

    async def fetchval(self, sql: str, *args: Any) -> None:
        self.calls.append((sql, args))

    # A store function that takes a connection of its own (search, for its timed transaction) gets the recorder as
    # that connection too; what it runs with execute (begin, set local, rollback) is not a query to explain.
    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Recorder]:
        yield self

    async def execute(self, sql: str, *args: Any) -> None:
        pass

    def is_closed(self) -> bool:
        return False


async def user_positions(conn: asyncpg.Connection[Any], user_id: uuid.UUID) -> dict[str, Any]:
    """What the cases need for a user (not measured): its largest thread, and the keyset positions halfway
    through its messages, through that thread and through its threads."""
    biggest = await conn.fetchrow(
        "select thread_id, count(*) as n from public.messages where user_id = $1 group by thread_id "
        "order by n desc, thread_id limit 1",
        user_id,
    )
    assert biggest is not None
    messages = await conn.fetchval("select count(*) from public.messages where user_id = $1", user_id)
    threads = await conn.fetchval("select count(*) from public.threads where user_id = $1", user_id)
    middle_all = await conn.fetchrow(
        "select created_at, id from public.messages where user_id = $1 order by created_at desc, id desc "
        "offset $2 limit 1",
        user_id,
        messages // 2,
    )
    middle_thread = await conn.fetchrow(
        "select created_at, id from public.messages where thread_id = $1 order by created_at desc, id desc "
        "offset $2 limit 1",
        biggest["thread_id"],
        biggest["n"] // 2,
    )
    middle_threads = await conn.fetchrow(
        "select last_message_at, id from public.threads where user_id = $1 order by last_message_at desc, id desc "
        "offset $2 limit 1",
        user_id,
        threads // 2,
    )
    return {
        "messages": messages,
        "threads": threads,
        "thread": biggest["thread_id"],
        "thread_messages": biggest["n"],
        "middle_all": tuple(middle_all) if middle_all else None,
        "middle_thread": tuple(middle_thread) if middle_thread else None,
        "middle_threads": tuple(middle_threads) if middle_threads else None,
    }


def history_cases(who: str, user_id: uuid.UUID, at: dict[str, Any]) -> list[Case]:
    thread, limit = at["thread"], PAGE + 1  # the service asks for one row more than a page
    n, half = at["thread_messages"], at["messages"] // 2
    cases = [
        Case(
            "history",
            f"thread ({n:,} messages), newest {PAGE}",
            who,
            HISTORY_TARGET_MS,
            lambda db: chat_store.messages_page(db, user_id, limit, thread_id=thread),
        ),
        Case(
            "history",
            f"thread, page at message {n // 2 + 1:,}",
            who,
            HISTORY_TARGET_MS,
            lambda db: chat_store.messages_page(db, user_id, limit, at["middle_thread"], thread_id=thread),
        ),
        Case(
            "history",
            f"everything ({at['messages']:,}), newest {PAGE}",
            who,
            HISTORY_TARGET_MS,
            lambda db: chat_store.messages_page(db, user_id, limit),
        ),
        Case(
            "history",
            f"everything, page at message {half + 1:,}",
            who,
            HISTORY_TARGET_MS,
            lambda db: chat_store.messages_page(db, user_id, limit, at["middle_all"]),
        ),
        Case(
            "thread list",
            f"first page ({at['threads']:,} threads)",
            who,
            HISTORY_TARGET_MS,
            lambda db: thread_store.threads_page(db, user_id, limit, None),
        ),
        Case(
            "thread list",
            f"page at thread {at['threads'] // 2 + 1:,}",
            who,
            HISTORY_TARGET_MS,
            lambda db: thread_store.threads_page(db, user_id, limit, at["middle_threads"]),
        ),
    ]
    return cases


SEARCH_LIMIT = 20  # the API's default page size (the service asks for one row more)
SEARCHES = {"a common word": COMMON_SEARCH, "a rare word": RARE_WORD, "a two-word phrase": f'"{PHRASE}"'}


def search_cases(who: str, user_id: uuid.UUID, matches: dict[str, int], timeout_seconds: float) -> list[Case]:
    def case(label: str, query: str) -> Case:
        found = matches[query]
        return Case(
            "search",
            f"{label}, {query} ({found:,} match{'' if found == 1 else 'es'}), first {SEARCH_LIMIT}",
            who,
            SEARCH_TARGET_MS,
            lambda db: chat_store.search_messages(
                db, user_id, query, SEARCH_LIMIT + 1, timeout_seconds=timeout_seconds
            ),
        )

    return [case(label, query) for label, query in SEARCHES.items()]


async def count_matches(pool: Database, user_id: uuid.UUID, query: str) -> int:
    """How many of the user's messages the search finds: its own function, page after page (not measured)."""
    found, after = 0, None
    while rows := await chat_store.search_messages(pool, user_id, query, 100, after, timeout_seconds=30):
        found += len(rows)
        after = (rows[-1]["rank"], rows[-1]["id"])
    return found


async def run_case(pool: Database, case: Case, runs: int, warmup: int) -> None:
    for _ in range(warmup):
        await case.call(pool)
    for _ in range(runs):
        started = time.perf_counter()
        rows = await case.call(pool)
        case.times.append(time.perf_counter() - started)
    case.rows = len(rows)


def _literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, uuid.UUID):
        return f"'{value}'::uuid"
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no literal for {value!r}")


async def explain(conn: asyncpg.Connection[Any], case: Case) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the case's statement(s) as a prepared statement after 10 executions (the plan
    cache switches to a generic plan after 5 when it is not costlier, as it does in the service's connections)."""
    recorder = Recorder()
    await case.call(recorder)
    for sql, args in recorder.calls:
        values = ", ".join(_literal(value) for value in args)
        execute = f"execute bench_explain({values})" if args else "execute bench_explain"
        await conn.execute(f"prepare bench_explain as {sql}")
        try:
            for _ in range(10):
                await conn.execute(execute)
            plan = await conn.fetch(f"explain (analyze, buffers) {execute}")
        finally:
            await conn.execute("deallocate bench_explain")
        print(f"\n--- {case.group}: {case.label}, {case.user} user")
        print(" ".join(sql.split()))
        if args:
            print(f"  with {values}")
        print("\n".join(row[0] for row in plan), flush=True)
        if called := _CALLED_FUNCTION.search(sql):
            await explain_function_query(conn, called["name"], called["args"], args)


_CALLED_FUNCTION = re.compile(r"\bfrom\s+(?P<name>\w+\.\w+)\s*\((?P<args>[^()]*)\)", re.IGNORECASE)
_RETURN_QUERY = re.compile(r"\breturn\s+query\s+(?P<sql>.*?);\s*end;?\s*$", re.IGNORECASE | re.DOTALL)
_ASSIGNMENT = re.compile(r"^\s*(?P<name>\w+)\s*:=\s*(?P<expr>.*?);", re.MULTILINE | re.DOTALL)
_DECLARED = re.compile(r"^[ \t]*(?P<name>\w+)[ \t]+(?P<type>[\w \[\]]+?)[ \t]*(?::=[^;]*)?;", re.MULTILINE)


def _put_in(sql: str, values: dict[str, str]) -> str:
    """``sql`` with each unqualified name in ``values`` replaced by its SQL constant."""
    for name, value in values.items():
        sql = re.sub(rf"(?<![.\w\"]){re.escape(name)}(?![\w\"])", lambda _, constant=value: constant, sql)
    return sql


async def explain_function_query(conn: asyncpg.Connection[Any], function: str, call: str, args: Sequence[Any]) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) inside a PL/pgSQL function the statement calls (a plain EXPLAIN shows a Function
    Scan only): its ``return query`` statement as the database has it (pg_proc), with the call's arguments and the
    function's assigned variables put in as constants, which is how a function with force_custom_plan is planned
    (auto_explain, which would show it directly, is not in the local PostgreSQL build)."""
    row = await conn.fetchrow(
        "select p.prosrc, l.lanname, p.proconfig, p.proargnames[1:p.pronargs] as names, "
        "array(select format_type(t, null) from unnest(p.proargtypes) t) as types "
        "from pg_proc p join pg_language l on l.oid = p.prolang where p.oid = to_regproc($1)",
        function,
    )
    positions = [part.strip() for part in call.split(",")]
    if row is None or row["lanname"] != "plpgsql" or not (body := _RETURN_QUERY.search(row["prosrc"])):
        return
    if len(positions) != len(row["names"]) or not all(re.fullmatch(r"\$\d+", p) for p in positions):
        print(f"(the call of {function} does not pass its parameters in order: no EXPLAIN of its query)")
        return
    values = {
        name: f"({_literal(args[int(position[1:]) - 1])})::{sql_type}"
        for name, position, sql_type in zip(row["names"], positions, row["types"], strict=True)
    }
    declarations = re.split(r"\bbegin\b", re.split(r"\bdeclare\b", row["prosrc"], maxsplit=1)[-1], maxsplit=1)[0]
    declared = {m["name"]: m["type"].strip() for m in _DECLARED.finditer(declarations)}
    for assigned in _ASSIGNMENT.finditer(row["prosrc"]):
        if (name := assigned["name"]) in declared:
            value = await conn.fetchval(f"select ({_put_in(assigned['expr'], values)})::text")
            values[name] = f"({_literal(value)})::{declared[name]}"
    sql = _put_in(body["sql"], values)
    plan = await conn.fetch(f"explain (analyze, buffers) {sql}")
    print(f"\n  inside {function} ({', '.join(row['proconfig'] or [])}): its return query, with {values}")
    print("\n".join(r[0] for r in plan), flush=True)


SIZES = """
    select c.oid::regclass::text as name, c.relkind::text as relkind, t.relname as table_name,
        pg_relation_size(c.oid) as bytes,
        case when c.relkind = 'r' then pg_total_relation_size(c.oid) - pg_relation_size(c.oid)
            - pg_indexes_size(c.oid) end as toast, c.reltuples::bigint as rows
    from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
    left join pg_index i on i.indexrelid = c.oid
    left join pg_class t on t.oid = coalesce(i.indrelid, c.oid)
    where n.nspname = 'public' and c.relkind in ('r', 'i') and t.relname = any($1::text[])
    order by t.relname, c.relkind desc, c.relname
"""
SIZED_TABLES = ["messages", "threads", "message_feedback", "user_profiles"]


def mib(value: int) -> str:
    return f"{value / 2**20:,.1f} MiB" if value < 2**30 else f"{value / 2**30:,.2f} GiB"


async def print_sizes(conn: asyncpg.Connection[Any]) -> None:
    rows = []
    for row in await conn.fetch(SIZES, SIZED_TABLES):
        kind = "table" if row["relkind"] == "r" else "index"
        toast = f" (+{mib(row['toast'])} TOAST)" if row["relkind"] == "r" and row["toast"] else ""
        rows.append([row["name"], kind, f"{row['rows']:,}", mib(row["bytes"]) + toast])
    database = await conn.fetchval("select pg_database_size(current_database())")
    rows.append([f"database {await conn.fetchval('select current_database()')} (all)", "", "", mib(database)])
    print_table("Sizes (pg_relation_size; rows: reltuples)", ["relation", "kind", "rows", "size"], rows)


def print_figures(cases: Sequence[Case], runs: int, warmup: int) -> None:
    rows = []
    for case in cases:
        worst = p95(case.times) * 1000
        verdict = "ok" if worst <= case.target_ms else "MISSED"
        rows.append([
            f"{case.group}: {case.label}", case.user, str(case.rows), ms(median(case.times)), ms(p95(case.times)),
            ms(max(case.times)), f"<= {case.target_ms:.0f} ms", verdict,
        ])  # fmt: skip
    print_table(
        f"Latency of the service's statements (asyncpg, prepared; {runs} runs each after {warmup} not counted, "
        "one at a time, warm cache)",
        ["query", "user", "rows", "median", "p95", "max", "target p95", ""],
        rows,
    )


async def measure(url: str, meta: dict[str, Any], runs: int, warmup: int, with_explain: bool) -> None:
    users = {"heavy": uuid.UUID(meta["heavy_user"]), "typical": uuid.UUID(meta["typical_user"])}
    conn = await asyncpg.connect(url)
    settings = load_settings({
        "DATABASE_URL": url,
        "DATABASE_POOL_MIN": "1",
        "DATABASE_POOL_MAX": "1",
        "SUPABASE_URL": "http://127.0.0.1:9",
        "SUPABASE_SERVICE_KEY": "bench-service-role-key-0123456789abcdef",
        "LETTA_BASE_URL": "http://127.0.0.1:9",
        "LITELLM_BASE_URL": "http://127.0.0.1:9",
        "LITELLM_MASTER_KEY": "sk-unused",
        "LOG_LEVEL": "warning",
    })  # fmt: skip
    pool = await create_pool(settings)
    try:
        cases: list[Case] = []
        for who, user_id in users.items():
            at = await user_positions(conn, user_id)
            print(
                f"  {who} user {user_id}: {at['messages']:,} messages in {at['threads']:,} threads, the largest "
                f"{at['thread_messages']:,} messages",
                flush=True,
            )
            matches = {query: await count_matches(pool, user_id, query) for query in SEARCHES.values()}
            timeout = settings.search_timeout_seconds  # the service's, as the route passes it
            cases += history_cases(who, user_id, at) + search_cases(who, user_id, matches, timeout)
        cases.sort(key=lambda case: ("history", "thread list", "search").index(case.group))
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        print(f"  load average before: {load} (1, 5, 15 min; 2 cores shared with whatever else runs)", flush=True)
        started = time.monotonic()
        for case in cases:
            await run_case(pool, case, runs, warmup)
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        print(f"  measured in {time.monotonic() - started:.1f}s (load average after: {load})", flush=True)
        print_figures(cases, runs, warmup)
        await print_sizes(conn)
        if with_explain:
            for case in cases:
                await explain(conn, case)
    finally:
        await pool.close()
        await conn.close()


# -- running --------------------------------------------------------------------------------------------------
def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def cluster() -> Iterator[LocalPostgres]:
    """The bench's Postgres, started and always stopped (its data stays on disk for ``--reuse``)."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    pg = LocalPostgres(STATE_DIR / "pg", PORT)
    pg.init()
    pg.start()
    print(f"postgres on port {PORT}, data in {pg.data_dir}", flush=True)
    try:
        yield pg
    finally:
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            pg.stop()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous)
        print("postgres stopped", flush=True)


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """``/tmp/bench_running`` (a directory, made atomically) while measuring: other benchmarks wait for it."""
    waiting = False
    while True:
        try:
            LOCK.mkdir()
            break
        except FileExistsError:
            if not waiting:
                print(f"waiting for {LOCK} (another benchmark is measuring) ...", flush=True)
                waiting = True
            time.sleep(20)
    try:
        yield
    finally:
        LOCK.rmdir()


async def prepare(pg: LocalPostgres, sizes: Sizes, reuse: bool) -> dict[str, Any]:
    meta = await stored_meta(pg, sizes.database) if reuse else None
    if meta is not None and meta.get("sizes") != dataclasses.asdict(sizes):
        print(f"the stored data set has other sizes ({meta.get('sizes')}): building it again", flush=True)
        meta = None
    if meta is not None and (changed := await changed_migrations(pg, sizes.database)):
        print(f"migrations changed since the data set was built ({', '.join(changed)}): building it again", flush=True)
        meta = None
    if meta is None:
        meta = await build_data_set(pg, sizes)
    else:
        print(f"reusing the data set built {meta['built_at']} in {meta['build_seconds']:.0f}s", flush=True)
        await migrate_loaded(pg, sizes.database)
    await check_indexes(pg, sizes.database)
    return meta


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuse", action="store_true", help="use the data set on disk if it has these sizes")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN (ANALYZE, BUFFERS) of every query")
    parser.add_argument("--runs", type=int, default=200, help="measured runs per query and user")
    parser.add_argument("--warmup", type=int, default=20, help="runs before those, not counted")
    parser.add_argument("--build-only", action="store_true", help="build (or check) the data set, measure nothing")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every size (0.01 for a quick try)")
    parser.add_argument("--users", type=int, default=FULL_SIZES.users)
    parser.add_argument("--threads", type=int, default=FULL_SIZES.threads)
    parser.add_argument("--messages", type=int, default=FULL_SIZES.messages)
    parser.add_argument("--heavy-threads", type=int, default=FULL_SIZES.heavy_threads)
    parser.add_argument("--heavy-messages", type=int, default=FULL_SIZES.heavy_messages)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = Sizes.scaled(args.scale, args)
    banner("threads benchmark")
    with cluster() as pg:
        meta = asyncio.run(prepare(pg, sizes, args.reuse))
        typical = meta["typical"]
        print(
            f"  data set: {sizes.users:,} users, {sizes.threads:,} threads, {sizes.messages:,} messages; built "
            f"{meta['built_at']} in {meta['build_seconds']:.0f}s; typical user: {typical['threads']} threads, "
            f"{typical['messages']} messages (medians {typical['median_threads']}, {typical['median_messages']})",
            flush=True,
        )
        if args.build_only:
            return
        with machine_lock():
            banner("measuring")
            asyncio.run(measure(pg.url(sizes.database), meta, args.runs, args.warmup, args.explain))


if __name__ == "__main__":
    entry_point(main)
