import { useEffect, useState } from "preact/hooks";
import { decodeClaims, expired, type PmError } from "../client";

interface Props {
  /** Unix seconds at which the current token expires. */
  expiresAt: number;
  /** The signed-in user: a token of another user is refused here. */
  expectSub: string;
  /** Why the previous token did not do (the server refused it), if it did not. */
  error?: PmError;
  onToken: (token: string) => void;
}

/**
 * RenewBanner asks for a new access token before the current one expires,
 * in a strip under the top bar that leaves the board usable. The token is
 * handed to the node over the open connection: no reload, no reconnect.
 */
export function RenewBanner({ expiresAt, expectSub, error, onToken }: Props) {
  const [value, setValue] = useState("");
  const [local, setLocal] = useState("");
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1_000);
    return () => clearInterval(t);
  }, []);
  const submit = (e: Event) => {
    e.preventDefault();
    const t = value.trim();
    try {
      const c = decodeClaims(t);
      if (expired(c, Date.now())) throw new Error("This token has expired.");
      if (c.sub !== expectSub) throw new Error("This token is another user's.");
      setValue("");
      onToken(t);
    } catch (err) {
      setLocal(err instanceof Error ? err.message : String(err));
    }
  };
  const problem = local || (error ? `The server refused the last token: ${error.message}` : "");
  const until = new Date(expiresAt * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return (
    <section class="renew" role="region" aria-label="Session ending" data-testid="renew-banner">
      <form class="renew-form" onSubmit={submit}>
        <svg class="renew-icon" viewBox="0 0 16 16" width="16" height="16" aria-hidden="true">
          <circle cx="8" cy="8" r="6.25" fill="none" stroke="currentColor" stroke-width="1.5" />
          <path d="M8 4.5V8l2.5 1.5" fill="none" stroke="currentColor" stroke-width="1.5" stroke-linecap="round" />
        </svg>
        <p class="renew-text">
          <strong>Your session ends {left(expiresAt * 1000 - now)}</strong> (at {until}). Paste a new access token to stay signed
          in; the board stays open.
        </p>
        <label class="sr-only" for="renew-token">
          New access token
        </label>
        <input
          id="renew-token"
          class="renew-input"
          type="text"
          autocomplete="off"
          spellcheck={false}
          placeholder="eyJhbGciOi…"
          value={value}
          aria-invalid={problem ? "true" : undefined}
          aria-describedby={problem ? "renew-error" : undefined}
          onInput={(e) => {
            setValue(e.currentTarget.value);
            setLocal("");
          }}
        />
        <button type="submit" class="button primary" disabled={!value.trim()}>
          Renew session
        </button>
      </form>
      {problem && (
        <p id="renew-error" class="renew-error" role="alert">
          {problem}
        </p>
      )}
    </section>
  );
}

/** left says how long until a moment, for a person: "in 4 min", "in 35 s", "now". */
function left(ms: number): string {
  if (ms <= 0) return "now";
  if (ms < 60_000) return `in ${Math.ceil(ms / 1000)} s`;
  return `in ${Math.ceil(ms / 60_000)} min`;
}
