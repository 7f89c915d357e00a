// One thread's conversation: useChat against the service's AI SDK endpoint, with the thread id as the chat id.
// `resume: true` makes a reload (or a second tab) pick up the reply being written in this thread.
import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport, type UIMessage } from "ai";
import { useState } from "react";
import { api, ok } from "./api";
import { config } from "./config";
import type { Rating, StoredMessage } from "./data";
import { accessToken } from "./supabase";

/** What the service puts in a reply's metadata: the `start` chunk's ids, then the `finish` chunk's (done) data. */
type ReplyMetadata = { turn_id?: string; user_message_id?: string; message_id?: string | null; rating?: Rating | null };
export type ChatMessage = UIMessage<ReplyMetadata>;

const transport = new DefaultChatTransport<ChatMessage>({
  api: `${config.apiUrl}/api/v1/chat/ui`,
  headers: async () => ({ Authorization: `Bearer ${await accessToken()}` }),
  // The agent keeps the conversation: the service reads only the newest message, so send only that one.
  prepareSendMessagesRequest: ({ id, messages }) => ({ body: { id, messages: messages.slice(-1) } }),
});

/** Stored messages as useChat's initial messages (a reply's stored id in its metadata, for feedback and forks). */
export function asChatMessages(stored: StoredMessage[]): ChatMessage[] {
  return stored.map((m) => ({
    id: m.id,
    role: m.role,
    parts: [{ type: "text", text: m.status === "cancelled" && !m.content ? "(stopped)" : m.content }],
    metadata: m.role === "assistant" ? { message_id: m.id, turn_id: m.turnId, rating: m.rating } : undefined,
  }));
}

export function Conversation(props: {
  threadId: string;
  initial: ChatMessage[];
  onReplyDone: () => void;
  onFork: (messageId: string) => void;
}) {
  const { messages, sendMessage, stop, status, error } = useChat<ChatMessage>({
    id: props.threadId,
    messages: props.initial,
    resume: true,
    transport,
    onFinish: props.onReplyDone,
  });
  const [input, setInput] = useState("");
  const busy = status === "submitted" || status === "streaming";

  function stopReply() {
    stop(); // closes this page's stream at once
    api.POST("/api/v1/chat/cancel"); // stops the reply itself, on the server and in every tab following it
  }

  return (
    <section className="conversation">
      <ol className="messages">
        {messages.map((message) => (
          <li key={message.id} className={`message ${message.role}`} data-testid={`message-${message.role}`}>
            {message.parts.map((part, i) =>
              part.type === "text" ? (
                <p key={i} className="text">
                  {part.text}
                </p>
              ) : part.type === "dynamic-tool" ? (
                <span key={i} className="tool">
                  memory tool: {part.toolName}
                </span>
              ) : null,
            )}
            {message.role === "assistant" && message.metadata?.message_id && (
              <ReplyActions
                messageId={message.metadata.message_id}
                rating={message.metadata.rating ?? null}
                onFork={props.onFork}
              />
            )}
          </li>
        ))}
      </ol>
      {error && <p className="error">{error.message}</p>}
      <form
        className="composer"
        onSubmit={(event) => {
          event.preventDefault();
          if (!input.trim() || busy) return;
          sendMessage({ text: input });
          setInput("");
        }}
      >
        <input
          aria-label="Message"
          placeholder="Message your agent…"
          value={input}
          onChange={(event) => setInput(event.target.value)}
        />
        {busy ? (
          <button type="button" onClick={stopReply}>
            Stop
          </button>
        ) : (
          <button type="submit">Send</button>
        )}
      </form>
    </section>
  );
}

function ReplyActions(props: { messageId: string; rating: Rating | null; onFork: (messageId: string) => void }) {
  const [rating, setRating] = useState(props.rating);
  const path = { params: { path: { message_id: props.messageId } } };

  async function rate(next: Rating) {
    if (next === rating) {
      await ok(api.DELETE("/api/v1/chat/messages/{message_id}/feedback", path));
      setRating(null);
    } else {
      await ok(api.PUT("/api/v1/chat/messages/{message_id}/feedback", { ...path, body: { rating: next } }));
      setRating(next);
    }
  }

  return (
    <div className="actions">
      <button aria-label="Good reply" aria-pressed={rating === "up"} onClick={() => rate("up")}>
        Good
      </button>
      <button aria-label="Bad reply" aria-pressed={rating === "down"} onClick={() => rate("down")}>
        Bad
      </button>
      <button onClick={() => props.onFork(props.messageId)}>Branch from here</button>
    </div>
  );
}
