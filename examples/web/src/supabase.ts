// Supabase Auth (sign-up, sign-in, refresh) and, under RLS, the user's own rows: typed by the generated Database.
import { createClient } from "@supabase/supabase-js";
import { config } from "./config";
import type { Database } from "./types/database";

export const supabase = createClient<Database>(config.supabaseUrl, config.supabaseKey);

/** The signed-in user's access token (supabase-js refreshes it before it expires): the service's credential. */
export async function accessToken(): Promise<string> {
  const { data } = await supabase.auth.getSession();
  if (!data.session) throw new Error("signed out");
  return data.session.access_token;
}
