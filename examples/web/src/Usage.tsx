// Usage and budget: our per-day totals (the last 30 days) and what LiteLLM says is left of the monthly budget.
import { useEffect, useState } from "react";
import { api, ok, type Schemas } from "./api";

const usd = (value: number | string | null | undefined) => (value == null ? "—" : `$${Number(value).toFixed(4)}`);

export function Usage() {
  const [usage, setUsage] = useState<Schemas["UsageReport"] | null>(null);
  useEffect(() => {
    ok(api.GET("/api/v1/user/usage")).then(setUsage);
  }, []);
  if (!usage) return <aside className="panel">Loading…</aside>;
  const budget = usage.billing.budget;
  return (
    <aside className="panel usage">
      <h2>Usage</h2>
      <dl>
        <dt>Messages</dt>
        <dd>{usage.totals.total_messages}</dd>
        <dt>Tokens</dt>
        <dd>{usage.totals.total_tokens}</dd>
        <dt>Cost (30 days)</dt>
        <dd>{usd(usage.totals.total_cost)}</dd>
      </dl>
      <h2>Budget</h2>
      {usage.billing.available && budget ? (
        <dl>
          <dt>Spent</dt>
          <dd>{usd(budget.spend)}</dd>
          <dt>Budget</dt>
          <dd>{usd(budget.max_budget)}</dd>
          <dt>Remaining</dt>
          <dd data-testid="remaining">{usd(budget.remaining)}</dd>
          <dt>Resets</dt>
          <dd>{budget.budget_reset_at ? new Date(budget.budget_reset_at).toLocaleDateString() : "—"}</dd>
        </dl>
      ) : (
        <p>Billing is unavailable right now.</p>
      )}
    </aside>
  );
}
