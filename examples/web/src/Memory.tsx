// The agent's memory: the core blocks it keeps about the user (`human`) and itself (`persona`), editable, and a
// search of its archival memory.
import { useEffect, useState } from "react";
import { api, ok, type Schemas } from "./api";

export function Memory() {
  const [blocks, setBlocks] = useState<Record<string, string>>({});
  const [saved, setSaved] = useState(false);
  const [query, setQuery] = useState("");
  const [hits, setHits] = useState<Schemas["ArchivalHit"][] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    ok(api.GET("/api/v1/agent/memory")).then(
      (memory) => setBlocks(Object.fromEntries(memory.blocks.map((b) => [b.label, b.value]))),
      (e: Error) => setError(e.message),
    );
  }, []);

  async function save() {
    setError(null);
    try {
      await ok(api.PATCH("/api/v1/agent/memory", { body: { human: blocks.human, persona: blocks.persona } }));
      setSaved(true);
    } catch (e) {
      setError((e as Error).message);
    }
  }

  async function search(event: React.FormEvent) {
    event.preventDefault();
    const memory = await ok(api.GET("/api/v1/agent/memory", { params: { query: { q: query, top_k: 5 } } }));
    setHits(memory.archival_results ?? []);
  }

  return (
    <aside className="panel memory">
      <h2>Memory</h2>
      {(["human", "persona"] as const).map((label) => (
        <label key={label}>
          {label === "human" ? "What it knows about you" : "Its persona"}
          <textarea
            aria-label={`${label} block`}
            rows={label === "human" ? 5 : 7}
            value={blocks[label] ?? ""}
            onChange={(e) => (setBlocks({ ...blocks, [label]: e.target.value }), setSaved(false))}
          />
        </label>
      ))}
      <button onClick={save}>Save memory</button>
      {saved && <span className="note">Saved</span>}
      <form onSubmit={search}>
        <input
          aria-label="Search archival memory"
          placeholder="Search archival memory"
          value={query}
          onChange={(e) => setQuery(e.target.value)}
        />
      </form>
      {hits && (
        <ul className="hits" data-testid="archival-hits">
          {hits.length === 0 && <li>Nothing found</li>}
          {hits.map((hit, i) => (
            <li key={i}>{hit.content}</li>
          ))}
        </ul>
      )}
      {error && <p className="error">{error}</p>}
    </aside>
  );
}
