-- Full-text search over a user's own messages. One definition, private.search_messages_for(user, ...), serves
-- both callers: the service (GET /api/v1/chat/search) with its user's id, and the frontend through
-- public.search_messages(...) (supabase.rpc('search_messages', ...)), which passes auth.uid() and nothing else.
--
-- Text search configuration: 'russian', not 'simple'. Users write English and Russian; the 'russian'
-- configuration stems Cyrillic words with the Russian Snowball stemmer and ASCII words with the English one
-- (pg_catalog's mapping: asciiword -> english_stem, word -> russian_stem), and drops both languages' stop words.
-- Measured on 1M synthetic messages (English and Russian), against 'simple' (no stemming, no stop words):
--   * recall: "кошка" finds "кошку"/"кошки", "ошибки" finds "ошибка", "cats" finds "cat", "running" "run";
--     with 'simple' a Russian noun is found in one of its ~6 cases only;
--   * the index is 25 % smaller (83 MB instead of 111 MB per 1M messages): stop words are not indexed;
--   * a query of stop words only ("the", "и") is refused instead of ranking most of a user's messages (with
--     'simple', "the" matched 12,509 of a heavy user's 50,000 messages: 67 ms p95, against 21-27 ms for the
--     commonest word the 'russian' configuration keeps);
--   * ё and е are one letter to the Russian stemmer (PostgreSQL 14+), as most users type them.
-- Other languages' words are kept as written (lowercased), as 'simple' would. Changing the configuration means
-- recomputing search_tsv (a table rewrite): it is named in search_tsv and in private.search_messages_for only.
--
-- The document is a stored generated column: ranking needs each match's tsvector, and recomputing it from the
-- content (an expression index) made a common word's search 10-25 times slower (300-800 ms for 8,000 matches).
-- The column is the message's own data, readable by its owner like the rest of the row (select the columns you
-- need from supabase-js rather than '*').
alter table public.messages
  add column search_tsv tsvector generated always as (to_tsvector('russian'::regconfig, content)) stored;

-- One GIN index over (user, words), so that a search reads only the user's postings however many messages other
-- users have. The user is indexed as a one-element array (GIN's built-in array_ops) rather than with btree_gin,
-- whose opclasses are not installed in the local PostgreSQL 16 (pgserver) the tests and benchmarks run: the index
-- holds the same entries (one per message for its user, one per lexeme) and a search intersects the user's
-- posting list with the words' (measured the same as btree_gin's (user_id, search_tsv), within noise: 16 ms against
-- 20 ms for a word in 8,000 of a heavy user's 50,000 messages). Queries must use the same expression:
-- array[user_id] @> array[<user>].
-- fastupdate off: with GIN's pending list every search reads the whole list, every user's new messages (+5 ms per
-- 3,000 pending messages, measured), and the insert that fills it flushes it (46-62 ms, measured: that may be the
-- user message a turn starts with). Without it an insert costs ~0.1-0.2 ms more and writes more WAL.
create index messages_search_idx on public.messages using gin ((array[user_id]), search_tsv) with (fastupdate = off);

-- A user's messages that match `query` (web-search syntax: words, "a phrase", -excluded, or), best first.
--
-- Ranked by ts_rank_cd (cover density, divided by 1 + log(length): a long reply does not win by length alone);
-- keyset pages over (rank desc, id desc): the next page starts after the last row's rank and id (before_rank,
-- before_id; rank is a real, exact through JSON). The snippet marks each match between U+E000 and U+E001
-- (Unicode private-use characters, never in ordinary text; not HTML, and not «», which Russian uses as quotes):
-- render it as text, split on the markers. A short message is its own snippet; a long one gives up to two
-- fragments joined by " … ". Only the page's rows get a snippet: ts_headline parses the whole content again.
--
-- Refused with 22023 (PostgREST answers 400) and a sentence: an empty query, one over 200 characters, one with no
-- word to look for (only stop words, punctuation or excluded words: it would have to read every message), a
-- result_limit outside 1-100, half a cursor. force_custom_plan: each call is planned for its user and words (one
-- generic plan cannot suit a user with 100 messages and one with 100,000).
--
-- Not for the API roles: it answers for any user it is given. The service runs it as itself (it reads every
-- user's messages anyway); the frontend reaches it only through public.search_messages.
create function private.search_messages_for(
  for_user uuid,
  query text,
  result_limit integer,
  before_rank real,
  before_id uuid,
  in_thread uuid
)
returns table (
  id uuid,
  thread_id uuid,
  thread_title text,
  role text,
  created_at timestamptz,
  rank real,
  snippet text
)
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
declare
  words tsquery;
begin
  if for_user is null then
    raise exception 'searching needs a signed-in user' using errcode = '42501';
  end if;
  if query is null or btrim(query) = '' then
    raise exception 'the search query is empty' using errcode = '22023';
  end if;
  if char_length(query) > 200 then
    raise exception 'the search query is longer than 200 characters' using errcode = '22023';
  end if;
  if result_limit is null or result_limit not between 1 and 100 then
    raise exception 'result_limit must be between 1 and 100' using errcode = '22023';
  end if;
  if (before_rank is null) <> (before_id is null) then
    raise exception 'before_rank and before_id go together: the rank and id of the previous page''s last row'
      using errcode = '22023';
  end if;
  words := websearch_to_tsquery('russian'::regconfig, query);
  -- '': nothing left after stop words and punctuation; 'T': only excluded words (no index can answer that).
  if querytree(words) in ('', 'T') then
    raise exception 'the search query has no word to look for (only common words, punctuation or excluded words)'
      using errcode = '22023';
  end if;

  return query
    select page.id, page.thread_id, t.title, page.role, page.created_at, page.rank,
      case
        when char_length(text_only) <= 300 then
          ts_headline('russian'::regconfig, text_only, words, U&'HighlightAll=true, StartSel=\E000, StopSel=\E001')
        else
          ts_headline('russian'::regconfig, text_only, words,
            U&'MaxFragments=2, MaxWords=20, MinWords=8, FragmentDelimiter=" … ", StartSel=\E000, StopSel=\E001')
      end
    from (
      select ranked.* from (
        select m.id, m.thread_id, m.role, m.created_at, m.content, ts_rank_cd(m.search_tsv, words, 1) as rank
        from public.messages m
        where array[m.user_id] @> array[for_user]
          and m.search_tsv @@ words
          and (in_thread is null or m.thread_id = in_thread)
      ) ranked
      where before_rank is null or (ranked.rank, ranked.id) < (before_rank, before_id)
      order by ranked.rank desc, ranked.id desc
      limit result_limit
    ) page
    -- The markers must come from ts_headline only.
    cross join lateral translate(page.content, U&'\E000\E001', '') as text_only
    left join public.threads t on t.id = page.thread_id
    order by page.rank desc, page.id desc;
end;
$$;
revoke all on function private.search_messages_for(uuid, text, integer, real, uuid, uuid)
  from public, anon, authenticated, service_role;

-- The frontend's search (supabase.rpc('search_messages', { query, ... })): the signed-in caller's own messages,
-- the user taken from the access token only. SECURITY DEFINER, not INVOKER under RLS, on purpose: under RLS,
-- PostgreSQL does not use an index for an operator that is not leakproof, and @@ and @> are not, so the policy's
-- user_id = auth.uid() would run on the (user_id, created_at) btree and every one of the user's messages would be
-- read and tested (measured: 90 ms for a word in 6 of a heavy user's 50,000 messages, against 2 ms through the
-- GIN index, and growing with the user's history). Isolation is the user id, which the caller cannot choose
-- (pgTAP: supabase/tests/database/80_message_search.test.sql).
create function public.search_messages(
  query text,
  result_limit integer default 20,
  before_rank real default null,
  before_id uuid default null,
  in_thread uuid default null
)
returns table (
  id uuid,
  thread_id uuid,
  thread_title text,
  role text,
  created_at timestamptz,
  rank real,
  snippet text
)
language sql
stable
security definer
set search_path = ''
as $$
  select * from private.search_messages_for(auth.uid(), query, result_limit, before_rank, before_id, in_thread)
$$;
revoke all on function public.search_messages(text, integer, real, uuid, uuid) from public, anon, service_role;
grant execute on function public.search_messages(text, integer, real, uuid, uuid) to authenticated;
