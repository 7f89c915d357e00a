// Search over the user's whole history; a hit opens its thread.
import { useState } from "react";
import { highlighted, searchMessages, type SearchHit } from "./data";

export function Search(props: { onOpen: (threadId: string) => void }) {
  const [query, setQuery] = useState("");
  const [hits, setHits] = useState<SearchHit[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  async function search(event: React.FormEvent) {
    event.preventDefault();
    if (!query.trim()) return;
    setError(null);
    try {
      setHits(await searchMessages(query.trim()));
    } catch (e) {
      setHits(null);
      setError((e as Error).message);
    }
  }

  return (
    <aside className="panel search">
      <h2>Search</h2>
      <form onSubmit={search}>
        <input
          aria-label="Search messages"
          placeholder="Search your messages"
          value={query}
          onChange={(e) => setQuery(e.target.value)}
        />
      </form>
      {error && <p className="error">{error}</p>}
      {hits && (
        <ul className="hits" data-testid="search-hits">
          {hits.length === 0 && <li>No messages found</li>}
          {hits.map((hit) => (
            <li key={hit.id}>
              <button onClick={() => props.onOpen(hit.thread_id)}>
                <small>{hit.thread_title ?? "Untitled thread"}</small>
                <br />
                <b>{hit.role === "user" ? "You" : "Agent"}:</b>{" "}
                {highlighted(hit.snippet).map((part, i) =>
                  part.marked ? <mark key={i}>{part.text}</mark> : part.text,
                )}
              </button>
            </li>
          ))}
        </ul>
      )}
    </aside>
  );
}
