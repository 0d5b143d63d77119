/** Claims are the parts of an access token the board shows or uses. */
export interface Claims {
  /** The user's UUID (`sub`). */
  sub: string;
  /** The tenant (`tenant_id`). */
  tenantId: string;
  /** The user's name (`name`), or "" when the token has none. */
  name: string;
  email: string;
  /** Expiry, unix seconds (`exp`); 0 when absent. */
  exp: number;
}

/**
 * decodeClaims reads a JWT's payload without checking its signature (the
 * server does that): enough to show who is signed in and when the token
 * expires. It throws when token is not a JWT with `sub` and `tenant_id`.
 */
export function decodeClaims(token: string): Claims {
  const parts = token.trim().split(".");
  if (parts.length !== 3 || !parts[1]) throw new Error("not a JWT: expected three dot-separated parts");
  let payload: unknown;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    payload = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new Error("not a JWT: the payload is not base64url JSON");
  }
  if (typeof payload !== "object" || payload === null) throw new Error("not a JWT: the payload is not an object");
  const p = payload as Record<string, unknown>;
  const str = (k: string) => (typeof p[k] === "string" ? p[k] : "");
  const claims: Claims = {
    sub: str("sub"),
    tenantId: str("tenant_id"),
    name: str("name"),
    email: str("email"),
    exp: typeof p.exp === "number" ? p.exp : 0,
  };
  if (!claims.sub || !claims.tenantId) throw new Error("the token has no sub or tenant_id claim");
  return claims;
}

/** Whether the claims' token has expired at nowMs (with a little slack for clock skew). */
export function expired(claims: Claims, nowMs: number): boolean {
  return claims.exp > 0 && claims.exp * 1000 <= nowMs - 5_000;
}

/**
 * refreshDelayMs is how long to wait before renewing a token that expires
 * in remainingMs: until 70–80% of that time has passed (at random, so that
 * boards opened together do not renew together), or, with maxLeadMs, until
 * at most maxLeadMs is left (a person asked for a token needs minutes, not
 * hours, of notice). 0 when the token has expired.
 */
export function refreshDelayMs(remainingMs: number, random: () => number = Math.random, maxLeadMs = Infinity): number {
  if (remainingMs <= 0) return 0;
  const lead = Math.min(remainingMs * (0.2 + 0.1 * random()), maxLeadMs);
  return Math.round(remainingMs - lead);
}
