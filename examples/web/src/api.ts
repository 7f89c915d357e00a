// The service's REST API, typed by the generated OpenAPI types: every call carries the Supabase access token.
import createClient from "openapi-fetch";
import { config } from "./config";
import { accessToken } from "./supabase";
import type { components, paths } from "./types/api";

export type Schemas = components["schemas"];

export const api = createClient<paths>({ baseUrl: config.apiUrl });
api.use({
  async onRequest({ request }) {
    request.headers.set("Authorization", `Bearer ${await accessToken()}`);
    return request;
  },
});

/** An RFC 9457 problem the service answered with: `code` is stable, `detail` is a sentence for people. */
export class Problem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    detail: string,
  ) {
    super(detail);
  }
}

/** The data of an openapi-fetch result, or its problem thrown. */
export async function ok<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const { data, error, response } = await call;
  if (error !== undefined || !response.ok) {
    const problem = (error ?? {}) as { code?: string; detail?: string };
    throw new Problem(response.status, problem.code ?? "http_error", problem.detail ?? response.statusText);
  }
  return data as T;
}
