import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

export default defineConfig({
  plugins: [react()],
  server: { port: 5173, strictPort: true },
  // React, the AI SDK and supabase-js: ~640 kB minified, ~180 kB gzipped, in one chunk.
  build: { chunkSizeWarningLimit: 700 },
});
