// Sign-in and sign-up with supabase-js: the same calls against Supabase Auth and against the local stack's
// GoTrue double. A new user's agent is provisioned by the backend (the signup webhook), not by this app.
import { useState } from "react";
import { supabase } from "./supabase";

export function SignIn() {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [name, setName] = useState("");
  const [error, setError] = useState<string | null>(null);

  async function submit(kind: "sign-in" | "sign-up") {
    setError(null);
    const { error } =
      kind === "sign-in"
        ? await supabase.auth.signInWithPassword({ email, password })
        : await supabase.auth.signUp({ email, password, options: { data: { full_name: name || undefined } } });
    if (error) setError(error.message);
  }

  return (
    <form className="sign-in" onSubmit={(event) => (event.preventDefault(), submit("sign-in"))}>
      <h1>ai-chat</h1>
      <input
        aria-label="Email"
        type="email"
        placeholder="Email"
        value={email}
        onChange={(e) => setEmail(e.target.value)}
      />
      <input
        aria-label="Password"
        type="password"
        placeholder="Password"
        value={password}
        onChange={(e) => setPassword(e.target.value)}
      />
      <input
        aria-label="Your name"
        placeholder="Your name (new accounts)"
        value={name}
        onChange={(e) => setName(e.target.value)}
      />
      <div className="row">
        <button type="submit">Sign in</button>
        <button type="button" onClick={() => submit("sign-up")}>
          Create account
        </button>
      </div>
      {error && <p className="error">{error}</p>}
    </form>
  );
}
