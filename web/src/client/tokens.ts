// Token sources: where the board gets a new token before its own expires.
import { PmError } from "./errors";

/**
 * Why a token is asked for: "refresh" ahead of expiry, while the
 * connection runs (it is handed over in band); "expired" after the node
 * closed the connection for expiry (the client reconnects with it).
 */
export type TokenReason = "refresh" | "expired";

/** TokenSource gives the client new tokens of the same user. */
export interface TokenSource {
  /**
   * next resolves with a new token, or rejects when there is none. lastError
   * is why the previous token from this source failed (the server refused
   * it, or it could not be read), to show a person.
   */
  next(reason: TokenReason, lastError?: PmError): Promise<string>;
  /**
   * The most notice before expiry at which to ask, for a source that asks a
   * person. Default: none (70–80% into the remaining lifetime).
   */
  maxLeadMs?: number;
}

/**
 * endpointTokenSource fetches tokens from an identity service with the
 * browser's credentials (its session cookie): GET url answers 200 with
 * JSON {"token": "<jwt>"} (or {"access_token": "<jwt>"}). Any other answer
 * rejects with UNAVAILABLE, and the client tries again later.
 */
export function endpointTokenSource(url: string, fetchFn: typeof fetch = (...a) => fetch(...a)): TokenSource {
  return {
    async next() {
      let res: Response;
      try {
        res = await fetchFn(url, { credentials: "include", cache: "no-store", headers: { Accept: "application/json" } });
      } catch {
        throw new PmError("UNAVAILABLE", "The sign-in service could not be reached.");
      }
      if (!res.ok) throw new PmError("UNAVAILABLE", `The sign-in service answered HTTP ${res.status}.`);
      let body: unknown;
      try {
        body = await res.json();
      } catch {
        throw new PmError("UNAVAILABLE", "The sign-in service did not answer with JSON.");
      }
      const b = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
      const token = typeof b.token === "string" ? b.token : typeof b.access_token === "string" ? b.access_token : "";
      if (!token) throw new PmError("UNAVAILABLE", "The sign-in service answered without a token.");
      return token;
    },
  };
}

/** tokenURL reads the token endpoint the node names to the page (PM_BOARD_TOKEN_URL), or "". */
export function tokenURL(doc: Document = document): string {
  return doc.querySelector<HTMLMetaElement>('meta[name="pm-token-url"]')?.content ?? "";
}
