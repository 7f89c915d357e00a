// The thread list: pick, start, rename and delete threads (all threads share the agent's memory).
import { useState } from "react";
import type { Thread } from "./data";

export function Threads(props: {
  threads: Thread[];
  current: string | null;
  onOpen: (id: string) => void;
  onNew: () => void;
  onRename: (id: string, title: string) => void;
  onDelete: (id: string) => void;
}) {
  const [editing, setEditing] = useState<string | null>(null);
  return (
    <nav className="threads">
      <button className="new" onClick={props.onNew}>
        + New thread
      </button>
      <ul>
        {props.threads.map((thread) => (
          <li key={thread.id} className={thread.id === props.current ? "current" : ""} data-testid="thread">
            {editing === thread.id ? (
              <form
                onSubmit={(event) => {
                  event.preventDefault();
                  const title = new FormData(event.currentTarget).get("title");
                  if (typeof title === "string" && title.trim()) props.onRename(thread.id, title.trim());
                  setEditing(null);
                }}
              >
                <input name="title" aria-label="Thread title" defaultValue={thread.title ?? ""} autoFocus />
              </form>
            ) : (
              <button className="title" onClick={() => props.onOpen(thread.id)}>
                {thread.title ?? (thread.is_default ? "Main conversation" : "New conversation")}
              </button>
            )}
            <button aria-label="Rename" title="Rename" onClick={() => setEditing(thread.id)}>
              ✎
            </button>
            <button aria-label="Delete" title="Delete" onClick={() => props.onDelete(thread.id)}>
              ×
            </button>
          </li>
        ))}
      </ul>
    </nav>
  );
}
