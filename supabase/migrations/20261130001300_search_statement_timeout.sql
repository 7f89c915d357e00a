-- The frontend's search (public.search_messages, supabase.rpc) gets the same time limit as the service's route
-- (SEARCH_TIMEOUT_SECONDS, 2 s by default): ranking costs per match, and a query of common words or'ed together can
-- match most of a long history (1.8 s for a user with 200,000 messages, bench/threads.py's heavy user). PostgREST
-- (12.2+, db-hoisted-tx-settings) sets a called function's statement_timeout for the call's transaction, before the
-- statement starts; otherwise the `authenticated` role's own limit would apply (8 s on Supabase). The service does
-- not call this function: it sets its own limit (service/chat/store.py).
alter function public.search_messages(text, integer, real, uuid, uuid) set statement_timeout = '2s';
