-- A search reads and ranks every match before it can keep the best ones, so what it reads per match is most of its
-- cost (bench/threads.py: a common word in ~9,800 of a heavy user's messages). Two changes, each measured there:
--
-- 1. search_tsv is kept in the row (storage MAIN) and the content goes to TOAST first. With the default (EXTENDED) a
--    long message's tsvector, the larger of the two and one that does not compress, was the one moved out of line,
--    so ranking it meant a TOAST index lookup and its chunks (~7,000 more buffer reads, ~8 ms, for that word); the
--    content is read for the page's rows only. It applies to messages written from now on: rows already written
--    keep where they are (re-writing them would rewrite the table) and are found and ranked as before.
--
-- 2. The matches are ranked on (id, rank) alone and only the page's rows are read in full (by primary key): carrying
--    every match's content, thread, role and time through the sort cost ~3 ms of ~37 for that word.
--
-- Everything else is private.search_messages_for as migration 20261130000700_message_search defines it: the same
-- arguments, checks, errors, ranking (ts_rank_cd, damped for length), keyset order and snippets.
alter table public.messages alter column search_tsv set storage main;

create or replace function private.search_messages_for(
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
    select msg.id, msg.thread_id, t.title, msg.role, msg.created_at, page.rank,
      case
        when char_length(text_only) <= 300 then
          ts_headline('russian'::regconfig, text_only, words, U&'HighlightAll=true, StartSel=\E000, StopSel=\E001')
        else
          ts_headline('russian'::regconfig, text_only, words,
            U&'MaxFragments=2, MaxWords=20, MinWords=8, FragmentDelimiter=" … ", StartSel=\E000, StopSel=\E001')
      end
    from (
      select ranked.id, ranked.rank from (
        select m.id, ts_rank_cd(m.search_tsv, words, 1) as rank
        from public.messages m
        where array[m.user_id] @> array[for_user]
          and m.search_tsv @@ words
          and (in_thread is null or m.thread_id = in_thread)
      ) ranked
      where before_rank is null or (ranked.rank, ranked.id) < (before_rank, before_id)
      order by ranked.rank desc, ranked.id desc
      limit result_limit
    ) page
    join public.messages msg on msg.id = page.id
    -- The markers must come from ts_headline only.
    cross join lateral translate(msg.content, U&'\E000\E001', '') as text_only
    left join public.threads t on t.id = msg.thread_id
    order by page.rank desc, page.id desc;
end;
$$;
