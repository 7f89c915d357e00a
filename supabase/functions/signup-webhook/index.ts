// signup-webhook: relays the auth.users webhooks that our Postgres triggers queue through pg_net to
// the Litestar service, signed per Standard Webhooks (the scheme Supabase Auth hooks use).
//
// pg_net can only send static headers, so the database authenticates with a shared secret in
// `x-webhook-secret`; this function checks it and adds a Standard Webhooks signature (timestamped,
// replay-bounded), the mode the service prefers (it also accepts the shared secret straight from pg_net). It keeps no state: pg_net's caller sees the service's status,
// and a 5xx (502 here) whenever the event was not delivered.
//
// Environment (read per request, so a missing value is a 500 with a clear detail, never an import
// crash): WEBHOOK_SECRET, STANDARD_WEBHOOK_SECRET (`whsec_<base64>`, `v1,` prefix accepted),
// SERVICE_WEBHOOK_URL.
//
// Served as `deno serve --allow-env --allow-net index.ts` locally and by Supabase's Edge Runtime,
// both of which use the default export. (No `Deno.serve` under `import.meta.main`: that is true
// under `deno serve` as well and would start a second server.)

import { Webhook } from "standardwebhooks";

/** Largest body accepted: the trimmed payload is well under 1 KiB. */
export const MAX_BODY_BYTES = 64 * 1024;
/** How long the service may take (it answers 202 at once); under pg_net's 5 s request timeout. */
export const FORWARD_TIMEOUT_MS = 4_000;

const UUID_RE =
  /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const EVENT_TYPES = ["INSERT", "DELETE"] as const;
type EventType = typeof EVENT_TYPES[number];

interface Config {
  webhookSecret: string;
  signer: Webhook;
  serviceUrl: string;
}

/** RFC 9457 problem details; `detail` never carries secrets or payload data. */
function problem(
  status: number,
  title: string,
  detail: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(
    JSON.stringify({ type: "about:blank", title, status, detail }),
    {
      status,
      headers: { "Content-Type": "application/problem+json", ...headers },
    },
  );
}

/** One JSON line per outcome: event type, user id and status only (no email, no secrets). */
function log(fields: Record<string, unknown>): void {
  console.log(JSON.stringify({ fn: "signup-webhook", ...fields }));
}

class ConfigError extends Error {}

function requireEnv(name: string): string {
  const value = Deno.env.get(name)?.trim();
  if (!value) throw new ConfigError(`${name} is not set`);
  return value;
}

function loadConfig(): Config {
  const webhookSecret = requireEnv("WEBHOOK_SECRET");
  const serviceUrl = requireEnv("SERVICE_WEBHOOK_URL");
  try {
    new URL(serviceUrl);
  } catch {
    throw new ConfigError("SERVICE_WEBHOOK_URL is not a valid URL");
  }
  // Supabase shows Auth hook secrets as `v1,whsec_...`; the library expects `whsec_...`.
  const standardSecret = requireEnv("STANDARD_WEBHOOK_SECRET").replace(
    /^v1,/,
    "",
  );
  let signer: Webhook;
  try {
    signer = new Webhook(standardSecret);
  } catch {
    throw new ConfigError(
      "STANDARD_WEBHOOK_SECRET must be whsec_ followed by base64",
    );
  }
  return { webhookSecret, signer, serviceUrl };
}

/**
 * Constant-time comparison: both sides are hashed first, so neither the content nor the length of
 * the expected secret leaks through timing.
 */
async function secretMatches(
  given: string | null,
  expected: string,
): Promise<boolean> {
  if (given === null) return false;
  const enc = new TextEncoder();
  const [a, b] = await Promise.all([
    crypto.subtle.digest("SHA-256", enc.encode(given)),
    crypto.subtle.digest("SHA-256", enc.encode(expected)),
  ]);
  const x = new Uint8Array(a), y = new Uint8Array(b);
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ y[i];
  return diff === 0;
}

/** Reads at most `limit` bytes; `null` when the body is larger (Content-Length may be absent). */
async function readBounded(
  req: Request,
  limit: number,
): Promise<Uint8Array<ArrayBuffer> | null> {
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (declared > limit) return null;
  if (req.body === null) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of req.body) {
    size += chunk.byteLength;
    if (size > limit) return null; // leaving the loop cancels the stream
    chunks.push(chunk);
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Checks the shape our triggers send; returns the event type and user id, or why it is invalid. */
function validate(
  payload: unknown,
): { type: EventType; userId: string } | { error: string } {
  if (!isObject(payload)) return { error: "body must be a JSON object" };
  const type = payload.type;
  if (!EVENT_TYPES.includes(type as EventType)) {
    return { error: "type must be INSERT or DELETE" };
  }
  if (payload.schema !== "auth" || payload.table !== "users") {
    return { error: "only auth.users events are accepted" };
  }
  // INSERT carries the new row in `record`, DELETE the removed row in `old_record`.
  const field = type === "INSERT" ? "record" : "old_record";
  const row = payload[field];
  if (!isObject(row) || typeof row.id !== "string" || !UUID_RE.test(row.id)) {
    return { error: `${field}.id must be a UUID` };
  }
  return { type: type as EventType, userId: row.id.toLowerCase() };
}

export async function handler(req: Request): Promise<Response> {
  if (req.method !== "POST") {
    return problem(
      405,
      "Method Not Allowed",
      "only POST is accepted",
      { Allow: "POST" },
    );
  }

  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    log({ outcome: "misconfigured", detail: err.message });
    return problem(500, "Internal Server Error", err.message);
  }

  if (
    !(await secretMatches(
      req.headers.get("x-webhook-secret"),
      config.webhookSecret,
    ))
  ) {
    log({ outcome: "unauthorized" });
    return problem(
      401,
      "Unauthorized",
      "missing or invalid x-webhook-secret header",
    );
  }

  const raw = await readBounded(req, MAX_BODY_BYTES);
  if (raw === null) {
    return problem(
      413,
      "Content Too Large",
      `body exceeds ${MAX_BODY_BYTES} bytes`,
    );
  }

  // The exact bytes received are forwarded and signed, so the service verifies what pg_net sent.
  let body: string;
  let payload: unknown;
  try {
    body = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(
      raw,
    );
    payload = JSON.parse(body);
  } catch {
    return problem(400, "Bad Request", "body is not valid UTF-8 JSON");
  }
  const event = validate(payload);
  if ("error" in event) return problem(400, "Bad Request", event.error);

  // Stable per event (one id for every retry of it). The service does not deduplicate by it: its work
  // is idempotent, so a retried event is simply done again.
  const msgId = `msg_${event.type.toLowerCase()}_${event.userId}`;
  const now = new Date();
  const headers = {
    "Content-Type": "application/json",
    "webhook-id": msgId,
    "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
    "webhook-signature": config.signer.sign(msgId, now, body),
  };

  let upstream: Response;
  let text: string;
  try {
    upstream = await fetch(config.serviceUrl, {
      method: "POST",
      headers,
      body: raw,
      redirect: "manual", // a redirect would silently drop the body elsewhere
      signal: AbortSignal.timeout(FORWARD_TIMEOUT_MS),
    });
    text = await upstream.text(); // inside the timeout; draining also frees the connection
  } catch (err) {
    const timedOut = err instanceof DOMException &&
      err.name === "TimeoutError";
    const detail = timedOut
      ? `service did not answer within ${FORWARD_TIMEOUT_MS} ms`
      : "service unreachable";
    log({ outcome: "unreachable", webhook_id: msgId, detail });
    return problem(502, "Bad Gateway", detail);
  }

  log({ outcome: "forwarded", webhook_id: msgId, status: upstream.status });
  if (upstream.status >= 500) {
    return problem(502, "Bad Gateway", `service answered ${upstream.status}`);
  }
  // Pass the service's own answer through (202 on success; a 4xx problem is not retryable).
  if (text === "") return new Response(null, { status: upstream.status });
  return new Response(text, {
    status: upstream.status,
    headers: {
      "Content-Type": upstream.headers.get("content-type") ??
        "application/json",
    },
  });
}

export default { fetch: handler } satisfies Deno.ServeDefaultExport;
