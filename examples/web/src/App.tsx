// The signed-in app: threads on the left, the conversation in the middle, a panel (memory, usage, search) on the
// right. The open thread's id is in the URL (#<thread id>), so a reload reopens it and resumes its reply.
import type { Session } from "@supabase/supabase-js";
import { useCallback, useEffect, useState } from "react";
import { api, ok } from "./api";
import { asChatMessages, Conversation, type ChatMessage } from "./Conversation";
import { listThreads, threadMessages, type Thread } from "./data";
import { Memory } from "./Memory";
import { Search } from "./Search";
import { SignIn } from "./SignIn";
import { Threads } from "./Threads";
import { supabase } from "./supabase";
import { Usage } from "./Usage";

export function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  useEffect(() => {
    supabase.auth.getSession().then(({ data }) => setSession(data.session));
    const { data } = supabase.auth.onAuthStateChange((_event, next) => setSession(next));
    return () => data.subscription.unsubscribe();
  }, []);
  if (session === undefined) return null;
  return session ? <Workspace email={session.user.email ?? ""} /> : <SignIn />;
}

type Panel = "memory" | "usage" | "search" | null;
const threadInUrl = () => location.hash.slice(1) || null;

function Workspace(props: { email: string }) {
  const ready = useAgentReady();
  const [threads, setThreads] = useState<Thread[]>([]);
  const [current, setCurrent] = useState<string | null>(threadInUrl);
  const [panel, setPanel] = useState<Panel>(null);

  const refresh = useCallback(async () => {
    const list = await listThreads();
    setThreads(list);
    const first = list.find((t) => t.is_default) ?? list[0];
    if (!threadInUrl() && first) location.replace(`#${first.id}`); // open the main thread, in the URL too
  }, []);

  useEffect(() => {
    if (ready) refresh();
  }, [ready, refresh]);
  useEffect(() => {
    const onHash = () => setCurrent(threadInUrl());
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);

  const open = (id: string) => (location.hash = id);
  const afterReply = () => {
    refresh();
    setTimeout(refresh, 2000); // a new thread's title is written just after its first reply
  };

  async function create() {
    const thread = await ok(api.POST("/api/v1/threads", { body: {} }));
    await refresh();
    open(thread.id);
  }
  async function rename(id: string, title: string) {
    await ok(api.PATCH("/api/v1/threads/{thread_id}", { params: { path: { thread_id: id } }, body: { title } }));
    await refresh();
  }
  async function remove(id: string) {
    await ok(api.DELETE("/api/v1/threads/{thread_id}", { params: { path: { thread_id: id } } }));
    if (id === current) {
      history.replaceState(null, "", location.pathname); // refresh() then opens the main thread
      setCurrent(null);
    }
    await refresh();
  }
  async function fork(messageId: string) {
    if (!current) return;
    const path = { thread_id: current };
    const thread = await ok(
      api.POST("/api/v1/threads/{thread_id}/fork", { params: { path }, body: { message_id: messageId } }),
    );
    await refresh();
    open(thread.id);
  }

  return (
    <div className="app">
      <header>
        <span className="brand">ai-chat</span>
        {(["memory", "usage", "search"] as const).map((name) => (
          <button key={name} aria-pressed={panel === name} onClick={() => setPanel(panel === name ? null : name)}>
            {name[0].toUpperCase() + name.slice(1)}
          </button>
        ))}
        <span className="who">{props.email}</span>
        <button onClick={() => supabase.auth.signOut()}>Sign out</button>
      </header>
      {!ready ? (
        <p className="preparing">Preparing your agent…</p>
      ) : (
        <main>
          <Threads
            threads={threads}
            current={current}
            onOpen={open}
            onNew={create}
            onRename={rename}
            onDelete={remove}
          />
          {current && <ThreadView key={current} threadId={current} onReplyDone={afterReply} onFork={fork} />}
          {panel === "memory" && <Memory />}
          {panel === "usage" && <Usage />}
          {panel === "search" && <Search onOpen={open} />}
        </main>
      )}
    </div>
  );
}

/** A thread's stored history, then its live conversation (which resumes a reply still being written). */
function ThreadView(props: { threadId: string; onReplyDone: () => void; onFork: (messageId: string) => void }) {
  const [initial, setInitial] = useState<ChatMessage[] | null>(null);
  useEffect(() => {
    threadMessages(props.threadId).then((stored) => setInitial(asChatMessages(stored)));
  }, [props.threadId]);
  if (!initial) return <section className="conversation" />;
  return (
    <Conversation threadId={props.threadId} initial={initial} onReplyDone={props.onReplyDone} onFork={props.onFork} />
  );
}

/** Whether the user's agent is ready: a new account's agent is created by the backend a moment after sign-up. */
function useAgentReady(): boolean {
  const [ready, setReady] = useState(false);
  useEffect(() => {
    let timer: ReturnType<typeof setTimeout>;
    const check = async () => {
      const { data } = await api.GET("/api/v1/agent/status");
      if (data?.agent_status === "active") setReady(true);
      else timer = setTimeout(check, 500);
    };
    check();
    return () => clearTimeout(timer);
  }, []);
  return ready;
}
