// Reading the user's threads and messages: with supabase-js under RLS where Supabase's PostgREST is there, else
// through the service (config.readFrom). Both give the UI the same shapes; writes always go through the service.
import { api, ok, type Schemas } from "./api";
import { config } from "./config";
import { supabase } from "./supabase";

export type Thread = Schemas["Thread"];
export type Rating = "up" | "down";

/** A stored message, as the conversation shows it. */
export type StoredMessage = {
  id: string;
  turnId: string;
  role: "user" | "assistant";
  content: string;
  status: string; // pending | complete | failed | cancelled
  rating: Rating | null;
};

const THREAD_COLUMNS =
  "id, title, title_source, is_default, forked_from_thread_id, forked_from_message_id, created_at, last_message_at";
const PAGE = 100;

/** The user's threads, most recent activity first. */
export async function listThreads(): Promise<Thread[]> {
  if (config.readFrom === "supabase") {
    const { data, error } = await supabase
      .from("threads")
      .select(THREAD_COLUMNS)
      .order("last_message_at", { ascending: false })
      .order("id", { ascending: false })
      .limit(PAGE);
    if (error) throw error;
    return data;
  }
  return (await ok(api.GET("/api/v1/threads", { params: { query: { limit: PAGE } } }))).threads;
}

/** A thread's latest messages, oldest first. */
export async function threadMessages(threadId: string): Promise<StoredMessage[]> {
  if (config.readFrom === "supabase") {
    const { data, error } = await supabase
      .from("messages")
      .select("id, turn_id, role, content, status, message_feedback(rating)")
      .eq("thread_id", threadId)
      .order("created_at", { ascending: false })
      .order("id", { ascending: false })
      .limit(PAGE);
    if (error) throw error;
    return data.reverse().map((row) => stored(row, row.message_feedback?.rating));
  }
  const page = await ok(api.GET("/api/v1/chat/history", { params: { query: { thread_id: threadId, limit: PAGE } } }));
  return page.messages.reverse().map((row) => stored(row, row.feedback?.rating));
}

function stored(
  row: { id: string; turn_id: string; role: string; content: string; status: string },
  rating: string | undefined,
): StoredMessage {
  return {
    id: row.id,
    turnId: row.turn_id,
    role: row.role === "user" ? "user" : "assistant",
    content: row.content,
    status: row.status,
    rating: rating === "up" || rating === "down" ? rating : null,
  };
}

/** A message that matched a search; `snippet` marks each match between U+E000 and U+E001 (see `highlighted`). */
export type SearchHit = { id: string; thread_id: string; thread_title: string | null; role: string; snippet: string };

// What the service's 422 search_too_broad says (service/web/problems.py), for the same limit on the supabase-js path.
const SEARCH_TOO_BROAD =
  "the search matches too many of your messages to rank in time; add words, or search one thread";

/** The user's messages matching `query` (words, "a phrase", -excluded), best first. */
export async function searchMessages(query: string): Promise<SearchHit[]> {
  if (config.readFrom === "supabase") {
    const { data, error } = await supabase.rpc("search_messages", { query, result_limit: 20 });
    // 22023: the function's own refusal, a sentence for people; 57014: past its time limit (Postgres's words).
    if (error?.code === "57014") throw new Error(SEARCH_TOO_BROAD);
    if (error) throw error;
    return data;
  }
  const page = await ok(api.GET("/api/v1/chat/search", { params: { query: { q: query, limit: 20 } } }));
  return page.results;
}

/** A snippet as parts of text, each marked or not: render marked parts in <mark>, all of it as text. */
export function highlighted(snippet: string): { text: string; marked: boolean }[] {
  return snippet.split("\uE001").flatMap((chunk) => {
    const [before, match] = chunk.split("\uE000");
    return [{ text: before, marked: false }, ...(match === undefined ? [] : [{ text: match, marked: true }])];
  });
}
