// Tests for signup-webhook: the handler is called directly, the service is a real HTTP server on
// an ephemeral port. Run: deno test --allow-net --allow-env supabase/functions/
// Assertions come from node:assert (built in), since jsr:@std/assert cannot be fetched here.

import assert from "node:assert/strict";
import { Webhook } from "standardwebhooks";
import { handler, MAX_BODY_BYTES } from "./index.ts";

const WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdef";
const KEY_BYTES = new TextEncoder().encode("test-standard-webhook-key-32byte");
const STANDARD_SECRET = `whsec_${btoa(String.fromCharCode(...KEY_BYTES))}`;
const USER_ID = "6f1c2a4e-8b1d-4c55-9a1e-2b3c4d5e6f70";
const EMAIL = "private.person@example.com";
const URL_IN = "http://127.0.0.1/functions/v1/signup-webhook";

interface Received {
  headers: Headers;
  body: Uint8Array;
}

/** A fake service answering `status`; records every request it gets. */
function fakeService(status = 202, responseBody = '{"accepted":true}') {
  const received: Received[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (req) => {
      received.push({
        headers: req.headers,
        body: new Uint8Array(await req.arrayBuffer()),
      });
      return new Response(responseBody, {
        status,
        headers: { "Content-Type": "application/json" },
      });
    },
  );
  return {
    received,
    url: `http://127.0.0.1:${server.addr.port}/webhooks/auth`,
    close: () => server.shutdown(),
  };
}

/** Sets the function's environment for one test and restores it afterwards. */
async function withEnv(
  env: Record<string, string | undefined>,
  fn: () => Promise<void>,
): Promise<void> {
  const saved = Object.fromEntries(
    Object.keys(env).map((k) => [k, Deno.env.get(k)]),
  );
  const apply = (values: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined) Deno.env.delete(k);
      else Deno.env.set(k, v);
    }
  };
  apply(env);
  try {
    await fn();
  } finally {
    apply(saved);
  }
}

/** Runs `fn` with a fake service and a complete, valid environment. */
async function withService(
  fn: (svc: ReturnType<typeof fakeService>) => Promise<void>,
  status = 202,
): Promise<void> {
  const svc = fakeService(status);
  try {
    await withEnv({
      WEBHOOK_SECRET,
      STANDARD_WEBHOOK_SECRET: STANDARD_SECRET,
      SERVICE_WEBHOOK_URL: svc.url,
    }, () => fn(svc));
  } finally {
    await svc.close();
  }
}

function insertEvent(overrides: Record<string, unknown> = {}): string {
  return JSON.stringify({
    type: "INSERT",
    table: "users",
    schema: "auth",
    record: {
      id: USER_ID,
      email: EMAIL,
      created_at: "2026-11-21T12:00:00Z",
      display_name: "Zoë",
    },
    old_record: null,
    ...overrides,
  });
}

function post(
  body: BodyInit | null,
  secret: string | null = WEBHOOK_SECRET,
): Request {
  const headers = new Headers({ "Content-Type": "application/json" });
  if (secret !== null) headers.set("x-webhook-secret", secret);
  return new Request(URL_IN, { method: "POST", headers, body });
}

async function assertProblem(res: Response, status: number): Promise<void> {
  assert.equal(res.status, status);
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  const problem = await res.json();
  assert.equal(problem.type, "about:blank");
  assert.equal(problem.status, status);
  assert.equal(typeof problem.title, "string");
  assert.equal(typeof problem.detail, "string");
}

/** Independent of the library: HMAC-SHA256 over "<id>.<timestamp>.<body>" with WebCrypto. */
async function expectedSignature(
  id: string,
  ts: string,
  body: Uint8Array,
): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    KEY_BYTES,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const prefix = new TextEncoder().encode(`${id}.${ts}.`);
  const data = new Uint8Array(prefix.length + body.length);
  data.set(prefix);
  data.set(body, prefix.length);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, data));
  return `v1,${btoa(String.fromCharCode(...mac))}`;
}

Deno.test("the signing library matches the Standard Webhooks spec vector (as the service's tests do)", () => {
  // Same vector as tests/unit/test_webhook_auth.py: JS signer and Python verifier agree.
  const signer = new Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
  assert.equal(
    signer.sign(
      "msg_p5jXN8AQM9LWM0D4loKWxJek",
      new Date(1614265330 * 1000),
      '{"test": 2432232314}',
    ),
    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
  );
});

Deno.test("INSERT is forwarded byte for byte with a verifiable signature; 202 passes through", async () => {
  await withService(async (svc) => {
    // Odd spacing and non-ASCII text: the forward must not re-serialise the JSON.
    const body = insertEvent().replace('"type":', '"type" :  ');
    const res = await handler(post(body));
    assert.equal(res.status, 202);
    assert.deepEqual(await res.json(), { accepted: true });

    assert.equal(svc.received.length, 1);
    const { headers, body: got } = svc.received[0];
    assert.deepEqual(got, new TextEncoder().encode(body));
    const id = headers.get("webhook-id")!;
    const ts = headers.get("webhook-timestamp")!;
    const sig = headers.get("webhook-signature")!;
    assert.equal(id, `msg_insert_${USER_ID}`);
    assert.ok(Math.abs(Number(ts) - Date.now() / 1000) < 5);
    assert.equal(sig, await expectedSignature(id, ts, got));
    assert.equal(headers.get("x-webhook-secret"), null); // the shared secret stays here

    const verified = new Webhook(STANDARD_SECRET).verify(
      new TextDecoder().decode(got),
      {
        "webhook-id": id,
        "webhook-timestamp": ts,
        "webhook-signature": sig,
      },
    );
    assert.deepEqual(verified, JSON.parse(body));
  });
});

Deno.test("DELETE uses old_record's id and a distinct stable webhook-id", async () => {
  await withService(async (svc) => {
    const body = JSON.stringify({
      type: "DELETE",
      table: "users",
      schema: "auth",
      record: null,
      old_record: { id: USER_ID, email: EMAIL },
    });
    assert.equal((await handler(post(body))).status, 202);
    assert.equal((await handler(post(body))).status, 202);
    const ids = svc.received.map((r) => r.headers.get("webhook-id"));
    assert.deepEqual(ids, [`msg_delete_${USER_ID}`, `msg_delete_${USER_ID}`]);
  });
});

Deno.test("wrong or missing x-webhook-secret is 401 and nothing is forwarded", async () => {
  await withService(async (svc) => {
    await assertProblem(await handler(post(insertEvent(), "wrong")), 401);
    await assertProblem(
      await handler(post(insertEvent(), WEBHOOK_SECRET + "x")),
      401,
    );
    await assertProblem(await handler(post(insertEvent(), null)), 401);
    assert.equal(svc.received.length, 0);
  });
});

Deno.test("malformed or foreign payloads are 400 and nothing is forwarded", async () => {
  await withService(async (svc) => {
    const bad = [
      "{not json",
      "[]",
      insertEvent({ table: "identities" }),
      insertEvent({ schema: "public" }),
      insertEvent({ type: "UPDATE" }),
      insertEvent({ record: { id: "not-a-uuid" } }),
      insertEvent({ record: { id: 42 } }),
      insertEvent({ record: null }),
      JSON.stringify({
        type: "DELETE",
        table: "users",
        schema: "auth",
        record: { id: USER_ID },
        old_record: null,
      }),
    ];
    for (const body of bad) {
      await assertProblem(await handler(post(body)), 400);
    }
    await assertProblem(
      await handler(post(new Uint8Array([0x7b, 0xff, 0x7d]))),
      400,
    );
    assert.equal(svc.received.length, 0);
  });
});

Deno.test("bodies over 64 KiB are 413, with or without Content-Length", async () => {
  await withService(async (svc) => {
    const big = insertEvent({ padding: "x".repeat(MAX_BODY_BYTES) });
    // Streamed (no Content-Length): the handler stops reading past the limit.
    const stream = new Blob([big]).stream();
    await assertProblem(await handler(post(stream)), 413);
    // Over real HTTP, where Content-Length is declared.
    const edge = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      handler,
    );
    try {
      const res = await fetch(`http://127.0.0.1:${edge.addr.port}/`, {
        method: "POST",
        headers: { "x-webhook-secret": WEBHOOK_SECRET },
        body: big,
      });
      await assertProblem(res, 413);
    } finally {
      await edge.shutdown();
    }
    assert.equal(svc.received.length, 0);
  });
});

Deno.test("methods other than POST are 405", async () => {
  await withService(async () => {
    const res = await handler(new Request(URL_IN, { method: "GET" }));
    assert.equal(res.headers.get("allow"), "POST");
    await assertProblem(res, 405);
  });
});

Deno.test("service unreachable is 502, so pg_net's caller retries", async () => {
  await withService(async (svc) => {
    await svc.close(); // the port is now closed: connection refused
    await assertProblem(await handler(post(insertEvent())), 502);
  });
});

Deno.test("service 5xx is 502", async () => {
  await withService(async (svc) => {
    await assertProblem(await handler(post(insertEvent())), 502);
    assert.equal(svc.received.length, 1);
  }, 500);
});

Deno.test("service 4xx passes through unchanged", async () => {
  await withService(async () => {
    assert.equal((await handler(post(insertEvent()))).status, 401);
  }, 401);
});

Deno.test("missing or invalid configuration is 500 with a clear detail", async () => {
  const cases: [Record<string, string | undefined>, string][] = [
    [{ WEBHOOK_SECRET: undefined }, "WEBHOOK_SECRET"],
    [{ SERVICE_WEBHOOK_URL: undefined }, "SERVICE_WEBHOOK_URL"],
    [{ SERVICE_WEBHOOK_URL: "not a url" }, "SERVICE_WEBHOOK_URL"],
    [{ STANDARD_WEBHOOK_SECRET: undefined }, "STANDARD_WEBHOOK_SECRET"],
    [{ STANDARD_WEBHOOK_SECRET: "whsec_" }, "STANDARD_WEBHOOK_SECRET"],
  ];
  await withService(async () => {
    for (const [env, name] of cases) {
      await withEnv(env, async () => {
        const res = await handler(post(insertEvent()));
        assert.equal(res.status, 500);
        const problem = await res.json();
        assert.match(problem.detail, new RegExp(name));
      });
    }
  });
});

Deno.test("a Supabase-style v1,whsec_ secret signs with the same key", async () => {
  await withService(async (svc) => {
    await withEnv(
      { STANDARD_WEBHOOK_SECRET: `v1,${STANDARD_SECRET}` },
      async () => {
        assert.equal((await handler(post(insertEvent()))).status, 202);
      },
    );
    const { headers, body } = svc.received[0];
    const id = headers.get("webhook-id")!,
      ts = headers.get("webhook-timestamp")!;
    assert.equal(
      headers.get("webhook-signature"),
      await expectedSignature(id, ts, body),
    );
  });
});

Deno.test("logs carry no secrets and no email", async () => {
  const lines: string[] = [];
  const original = { log: console.log, error: console.error };
  console.log = console.error = (...args: unknown[]) => {
    lines.push(args.map(String).join(" "));
  };
  try {
    await withService(async () => {
      await handler(post(insertEvent()));
      await handler(post(insertEvent(), "wrong"));
    });
    await withService(async () => {
      await handler(post(insertEvent()));
    }, 503);
  } finally {
    Object.assign(console, original);
  }
  assert.ok(lines.length >= 3);
  const all = lines.join("\n");
  for (const secret of [EMAIL, WEBHOOK_SECRET, STANDARD_SECRET]) {
    assert.ok(!all.includes(secret), `log leaked ${secret.slice(0, 6)}...`);
  }
});
