// The Vercel AI SDK's own client against the running service: `DefaultChatTransport` (what `useChat` uses)
// sends and reconnects, `readUIMessageStream` builds the assistant message from the chunks. Driven by
// tests/e2e/test_ai_sdk.py, which passes SERVICE_URL, ACCESS_TOKEN (a fresh user's) and RESULTS_FILE, then
// checks what this test wrote there against the messages stored in Postgres.
// Run: deno test --frozen --cached-only --config tests/e2e/ai_sdk/deno.json --allow-net --allow-env
//      --allow-sys=hostname --allow-write=<RESULTS_FILE> tests/e2e/ai_sdk

import assert from "node:assert/strict";
import {
  APICallError,
  DefaultChatTransport,
  readUIMessageStream,
  type UIMessage,
  type UIMessageChunk,
} from "ai";

const SERVICE_URL = Deno.env.get("SERVICE_URL")!;
const ACCESS_TOKEN = Deno.env.get("ACCESS_TOKEN")!;
const RESULTS_FILE = Deno.env.get("RESULTS_FILE")!;
const API = `${SERVICE_URL}/api/v1/chat/ui`;
const CHAT_ID = "chat-e2e";
const SLOW = "[[slow]] tell me a long story"; // the scripted model: 20 words, 100 ms apart

interface Result {
  messageId: string;
  text: string;
  metadata: Record<string, unknown>;
  parts: UIMessage["parts"];
}
const results: Record<string, Result> = {};

/** A transport as a frontend makes one, whose fetch keeps each response's status and headers. */
function transport(seen: Response[] = []) {
  return new DefaultChatTransport<UIMessage>({
    api: API,
    headers: { Authorization: `Bearer ${ACCESS_TOKEN}` },
    fetch: async (input, init) => {
      const response = await fetch(input, init);
      seen.push(response);
      return response;
    },
  });
}

function userMessage(text: string): UIMessage {
  return {
    id: crypto.randomUUID(),
    role: "user",
    parts: [{ type: "text", text }],
  };
}

function send(
  t: DefaultChatTransport<UIMessage>,
  text: string,
  abortSignal?: AbortSignal,
) {
  const history: UIMessage[] = [
    userMessage("an earlier question"),
    {
      id: "a1",
      role: "assistant",
      parts: [{ type: "text", text: "an earlier answer" }],
    },
    userMessage(text),
  ];
  return t.sendMessages({
    chatId: CHAT_ID,
    messages: history,
    trigger: "submit-message",
    messageId: undefined,
    abortSignal,
  });
}

/** The SDK's reader to the end: the final state of the assistant message (any error chunk fails). */
async function finalMessage(
  stream: ReadableStream<UIMessageChunk>,
): Promise<UIMessage> {
  let last: UIMessage | undefined;
  for await (
    const message of readUIMessageStream<UIMessage>({
      stream,
      terminateOnError: true,
    })
  ) {
    last = message;
  }
  assert.ok(last, "the stream produced no message");
  return last;
}

function textOf(message: UIMessage): string {
  const texts = message.parts.filter((p) => p.type === "text");
  assert.equal(
    texts.length,
    1,
    `one text part per reply: ${JSON.stringify(message.parts)}`,
  );
  const part = texts[0] as { text: string; state?: string };
  assert.equal(part.state, "done");
  return part.text;
}

function record(name: string, message: UIMessage) {
  results[name] = {
    messageId: message.id,
    text: textOf(message),
    metadata: message.metadata as Record<string, unknown>,
    parts: message.parts,
  };
}

Deno.test("reconnectToStream is null when no reply is being written (204)", async () => {
  const seen: Response[] = [];
  const stream = await transport(seen).reconnectToStream({ chatId: CHAT_ID });
  assert.equal(stream, null);
  assert.equal(seen[0].status, 204);
});

Deno.test("sendMessages streams a reply that readUIMessageStream builds into the assistant message", async () => {
  const seen: Response[] = [];
  const message = await finalMessage(await send(transport(seen), "hello"));
  assert.equal(seen[0].status, 200);
  assert.equal(seen[0].headers.get("x-vercel-ai-ui-message-stream"), "v1");
  assert.match(
    seen[0].headers.get("content-type") ?? "",
    /^text\/event-stream/,
  );
  assert.equal(message.role, "assistant");
  assert.equal(textOf(message), "You said: hello");
  const metadata = message.metadata as Record<string, unknown>;
  assert.equal(message.id, metadata.turn_id);
  assert.equal(metadata.status, "complete");
  assert.ok(metadata.message_id && metadata.user_message_id);
  record("hello", message);
});

Deno.test("a memory tool is a dynamic tool part the agent executed", async () => {
  const message = await finalMessage(
    await send(transport(), "remember that my cat is Miso"),
  );
  const tools = message.parts.filter((p) => p.type === "dynamic-tool");
  assert.ok(tools.length >= 1, JSON.stringify(message.parts));
  for (const tool of tools) {
    assert.equal(tool.toolName, "memory_insert");
    assert.equal(tool.state, "output-available");
    assert.equal(tool.providerExecuted, true);
  }
  assert.equal(textOf(message), "Got it, I will remember that my cat is Miso.");
  record("remember", message);
});

Deno.test("a stream cut after a few chunks is resumed by reconnectToStream to its end", async () => {
  const abort = new AbortController();
  const stream = await send(transport(), SLOW, abort.signal);
  const reader = stream.getReader();
  const first: UIMessageChunk[] = [];
  while (first.length < 4) {
    const { value, done } = await reader.read();
    assert.ok(!done, "the stream ended early");
    first.push(value);
  }
  abort.abort(); // the page goes away: the turn goes on in the service
  await reader.cancel().catch(() => {});
  assert.deepEqual(first.map((c) => c.type), [
    "start",
    "text-start",
    "text-delta",
    "text-delta",
  ]);
  const started = first[0] as { messageId: string };

  // While it runs, another message is refused before any stream: the SDK raises the problem.
  const refused = await send(transport(), "hello").then(
    () => assert.fail("a second turn was accepted"),
    (error: unknown) => error,
  );
  assert.ok(APICallError.isInstance(refused), String(refused));
  assert.equal(refused.statusCode, 409);
  assert.equal(JSON.parse(refused.responseBody!).code, "turn_in_progress");

  const resumed = await transport().reconnectToStream({ chatId: CHAT_ID });
  assert.ok(resumed, "nothing to resume while the reply is being written");
  const message = await finalMessage(resumed);
  assert.equal(message.id, started.messageId);
  assert.equal(textOf(message).split(" ").length, 20);
  record("resumed", message);

  assert.equal(await transport().reconnectToStream({ chatId: CHAT_ID }), null);
});

Deno.test("a body without a user message is a problem", async () => {
  const response = await fetch(API, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${ACCESS_TOKEN}`,
      "content-type": "application/json",
    },
    body: JSON.stringify({
      id: CHAT_ID,
      messages: [],
      trigger: "submit-message",
    }),
  });
  assert.equal(response.status, 422);
  assert.match(
    response.headers.get("content-type") ?? "",
    /^application\/problem\+json/,
  );
  assert.equal((await response.json()).code, "invalid_message");
});

Deno.test("write the results for the pytest side", async () => {
  await Deno.writeTextFile(RESULTS_FILE, JSON.stringify(results));
});
