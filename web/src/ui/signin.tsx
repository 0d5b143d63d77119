import { useState } from "preact/hooks";
import { decodeClaims, expired } from "../client";
import { Dialog } from "./dialog";

interface Props {
  onToken: (token: string) => void;
  /** Shown above the form (e.g. why signing in again is needed). */
  message?: string;
  /** In a dialog over the board (session expired) rather than a page. */
  modal?: boolean;
  /** When set, a token of another user is refused (its queued edits are this user's). */
  expectSub?: string;
  onCancel?: () => void;
  cancelLabel?: string;
}

/** SignIn takes an access token pasted by the person. */
export function SignIn({ onToken, message, modal, expectSub, onCancel, cancelLabel }: Props) {
  const [value, setValue] = useState("");
  const [error, setError] = useState("");
  const submit = (e: Event) => {
    e.preventDefault();
    const t = value.trim();
    try {
      const c = decodeClaims(t);
      if (expired(c, Date.now())) throw new Error("This token has expired.");
      if (expectSub && c.sub !== expectSub) throw new Error("This token is another user's: sign out first.");
      onToken(t);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };
  const form = (
    <form class="signin-form" onSubmit={submit} data-testid="signin-form">
      {message && (
        <p class="notice" role="alert">
          {message}
        </p>
      )}
      <label for="token">Access token</label>
      <textarea
        id="token"
        name="token"
        rows={5}
        spellcheck={false}
        autocomplete="off"
        placeholder="eyJhbGciOi…"
        value={value}
        aria-invalid={error ? "true" : undefined}
        aria-describedby={error ? "token-error" : "token-hint"}
        onInput={(e) => {
          setValue(e.currentTarget.value);
          setError("");
        }}
      />
      {error ? (
        <p id="token-error" class="field-error">
          {error}
        </p>
      ) : (
        <p id="token-hint" class="hint">
          Paste the token your administrator gave you, or open a link of the form <code>/#token=…</code>.
        </p>
      )}
      <div class="actions">
        {onCancel && (
          <button type="button" class="button" onClick={onCancel}>
            {cancelLabel ?? "Cancel"}
          </button>
        )}
        <button type="submit" class="button primary" disabled={!value.trim()}>
          Sign in
        </button>
      </div>
    </form>
  );
  if (modal) {
    return (
      <Dialog title="Sign in again" testid="signin-dialog" alert onClose={() => undefined}>
        {form}
      </Dialog>
    );
  }
  return (
    <main class="signin-page">
      <section class="signin-card" aria-labelledby="signin-title">
        <div class="brand brand-large" aria-hidden="true">
          <span class="logo">pm</span>
        </div>
        <h1 id="signin-title">Sign in to your board</h1>
        {form}
      </section>
    </main>
  );
}
