-- Structure, RLS switches, policies, grants and indexes of the initial schema.
begin;
select plan(41);

-- ------------------------------------------------------------------ tables
select has_table('public', 'user_profiles', 'public.user_profiles exists');
select has_table('public', 'messages', 'public.messages exists');
select has_table('public', 'usage_metrics', 'public.usage_metrics exists');
select has_table('private', 'litellm_keys', 'private.litellm_keys exists');
select has_table('private', 'webhook_config', 'private.webhook_config exists');
select has_table('private', 'deprovisioning', 'private.deprovisioning exists');

-- ------------------------------------------------------------------ RLS enabled everywhere
select is_empty(
  $$ select n.nspname || '.' || c.relname
     from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname in ('public', 'private') and c.relkind in ('r', 'p') and not c.relrowsecurity $$,
  'RLS is enabled on every table in public and private'
);
select results_eq(
  $$ select c.relname::text collate "default"
     from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where (n.nspname, c.relname) in (('public', 'user_profiles'), ('public', 'messages'),
                                      ('public', 'usage_metrics'), ('private', 'litellm_keys'),
                                      ('private', 'webhook_config'), ('private', 'deprovisioning'))
       and c.relforcerowsecurity
     order by 1 $$,
  $$ values ('deprovisioning'), ('litellm_keys'), ('messages'), ('usage_metrics'),
            ('user_profiles'), ('webhook_config') $$,
  'RLS is forced on our six tables'
);

-- ------------------------------------------------------------------ policies: SELECT for authenticated only
select policies_are('public', 'user_profiles', array['user_profiles_select_own'], 'user_profiles: one policy');
select policies_are('public', 'messages', array['messages_select_own'], 'messages: one policy');
select policies_are('public', 'usage_metrics', array['usage_metrics_select_own'], 'usage_metrics: one policy');
select policy_cmd_is('public', 'user_profiles', 'user_profiles_select_own', 'select', 'user_profiles policy is SELECT');
select policy_cmd_is('public', 'messages', 'messages_select_own', 'select', 'messages policy is SELECT');
select policy_cmd_is('public', 'usage_metrics', 'usage_metrics_select_own', 'select', 'usage_metrics policy is SELECT');
select policy_roles_are('public', 'user_profiles', 'user_profiles_select_own', array['authenticated'],
  'user_profiles policy applies to authenticated');
select policy_roles_are('public', 'messages', 'messages_select_own', array['authenticated'],
  'messages policy applies to authenticated');
select policy_roles_are('public', 'usage_metrics', 'usage_metrics_select_own', array['authenticated'],
  'usage_metrics policy applies to authenticated');
select is_empty(
  $$ select policyname from pg_policies where schemaname = 'private' $$,
  'private tables have no policies (nobody but the service reads them)'
);

-- ------------------------------------------------------------------ every column a policy filters on is indexed
-- Columns a policy references (pg_depend), without an index that starts with that column.
select isnt_empty(
  $$ select 1 from pg_policy p
     join pg_depend d on d.classid = 'pg_policy'::regclass and d.objid = p.oid
                     and d.refclassid = 'pg_class'::regclass and d.refobjid = p.polrelid
                     and d.refobjsubid > 0
     where p.polrelid in ('public.user_profiles'::regclass, 'public.messages'::regclass,
                          'public.usage_metrics'::regclass) $$,
  'policy column dependencies are visible (the next test is not vacuous)'
);
select is_empty(
  $$ select c.relname || '.' || a.attname
     from pg_policy p
     join pg_class c on c.oid = p.polrelid
     join pg_namespace n on n.oid = c.relnamespace
     join pg_depend d on d.classid = 'pg_policy'::regclass and d.objid = p.oid
                     and d.refclassid = 'pg_class'::regclass and d.refobjid = p.polrelid
                     and d.refobjsubid > 0
     join pg_attribute a on a.attrelid = p.polrelid and a.attnum = d.refobjsubid
     where n.nspname in ('public', 'private')
       and not exists (select 1 from pg_index i where i.indrelid = p.polrelid and i.indkey[0] = a.attnum) $$,
  'every column used by a policy leads an index'
);
select has_index('public', 'messages', 'messages_turn_id_idx', 'turn_id', 'messages(turn_id) is indexed');
select has_index('public', 'messages', 'messages_user_id_created_at_idx', array['user_id', 'created_at', 'id'],
  'history paging index on messages(user_id, created_at desc, id desc)');

-- ------------------------------------------------------------------ table privileges
select table_privs_are('public', 'user_profiles', 'authenticated', array['SELECT'], 'authenticated: SELECT only on user_profiles');
select table_privs_are('public', 'messages', 'authenticated', array['SELECT'], 'authenticated: SELECT only on messages');
select table_privs_are('public', 'usage_metrics', 'authenticated', array['SELECT'], 'authenticated: SELECT only on usage_metrics');
select table_privs_are('public', 'user_profiles', 'anon', '{}'::text[], 'anon: nothing on user_profiles');
select table_privs_are('public', 'messages', 'anon', '{}'::text[], 'anon: nothing on messages');
select table_privs_are('public', 'usage_metrics', 'anon', '{}'::text[], 'anon: nothing on usage_metrics');
select schema_privs_are('private', 'anon', '{}'::text[], 'anon: no USAGE on schema private');
select schema_privs_are('private', 'authenticated', '{}'::text[], 'authenticated: no USAGE on schema private');
select is_empty(
  $$ select r.rolname || ' ' || c.relname || ' ' || p.priv
     from pg_class c
     join pg_namespace n on n.oid = c.relnamespace
     cross join (values ('anon'), ('authenticated')) as r(rolname)
     cross join (values ('SELECT'), ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE')) as p(priv)
     where n.nspname = 'private' and c.relkind = 'r'
       and has_table_privilege(r.rolname, c.oid, p.priv) $$,
  'anon/authenticated have no table privileges in private'
);

-- ------------------------------------------------------------------ auth.users triggers
select trigger_is('auth', 'users', 'on_auth_user_created', 'private', 'handle_new_user',
  'AFTER INSERT trigger on auth.users calls private.handle_new_user()');
select trigger_is('auth', 'users', 'on_auth_user_deleted', 'private', 'handle_deleted_user',
  'BEFORE DELETE trigger on auth.users calls private.handle_deleted_user()');
select is_definer('private', 'handle_new_user', '{}'::name[], 'handle_new_user is SECURITY DEFINER');
select is_definer('private', 'handle_deleted_user', '{}'::name[], 'handle_deleted_user is SECURITY DEFINER');
select is_definer('private', 'send_auth_webhook', array['jsonb'], 'send_auth_webhook is SECURITY DEFINER');
select is_empty(
  $$ select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'private'
       and not coalesce(p.proconfig @> array['search_path=""'], false) $$,
  'every function in private pins search_path to empty'
);
select is_empty(
  $$ select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'private'
       and (has_function_privilege('anon', p.oid, 'EXECUTE')
            or has_function_privilege('authenticated', p.oid, 'EXECUTE')) $$,
  'API roles cannot execute functions in private'
);

-- ------------------------------------------------------------------ pg_net (stand-in locally, extension on Supabase)
select has_function('net', 'http_post', array['text', 'jsonb', 'jsonb', 'jsonb', 'integer'],
  'net.http_post(url, body, params, headers, timeout_milliseconds) exists');
select function_returns('net', 'http_post', array['text', 'jsonb', 'jsonb', 'jsonb', 'integer'], 'bigint',
  'net.http_post returns the request id');

-- ------------------------------------------------------------------ checks
select col_default_is('public', 'user_profiles', 'agent_status', 'pending'::text, 'profiles start pending');

select * from finish();
rollback;
