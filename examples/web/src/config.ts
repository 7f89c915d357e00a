// The app's settings, baked into the build by Vite from VITE_* variables (see .env.example).
export const config = {
  apiUrl: import.meta.env.VITE_API_URL,
  supabaseUrl: import.meta.env.VITE_SUPABASE_URL,
  supabaseKey: import.meta.env.VITE_SUPABASE_PUBLISHABLE_KEY,
  // Threads, history and search: read with supabase-js under RLS, or through the service where no PostgREST
  // runs (the local stack). Everything that writes goes through the service either way.
  readFrom: import.meta.env.VITE_READ_FROM ?? "supabase",
};
