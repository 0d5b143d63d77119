import { useEffect, useMemo, useState } from "preact/hooks";
import {
  ProjectManagementWebSocketClient,
  ProjectStateManager,
  decodeClaims,
  endpointTokenSource,
  expired,
  tokenURL,
  type PmError,
  type Problem,
  type TokenReason,
  type TokenSource,
} from "../client";
import { ConflictDialog } from "./conflict";
import { Dashboard } from "./dashboard";
import { ProjectView } from "./project";
import { RenewBanner } from "./renew";
import { forgetToken, readRoute, saveToken, takeToken, wsURL, type Route } from "./session";
import { SignIn } from "./signin";
import { ToastProvider, useToast } from "./toasts";
import { TopBar } from "./topbar";

/**
 * The most notice the board gives a person before their token expires: the
 * banner asking for a new one shows at most this long before.
 */
const ASK_LEAD_MS = 10 * 60_000;

/**
 * App is the whole board: the sign-in form, or the signed-in shell. With a
 * token endpoint (PM_BOARD_TOKEN_URL) and no token of its own, it first
 * tries the endpoint (the person may be signed in there already).
 */
export function App() {
  const endpoint = useMemo(() => tokenURL(), []);
  const [token, setToken] = useState(() => {
    const t = takeToken();
    try {
      if (t && !expired(decodeClaims(t), Date.now())) return t;
    } catch {
      // not a token: sign in again
    }
    return "";
  });
  const [fetching, setFetching] = useState(() => !token && endpoint !== "");
  useEffect(() => {
    if (!fetching) return;
    endpointTokenSource(endpoint)
      .next("refresh")
      .then(
        (t) => {
          decodeClaims(t); // throws for a token the board cannot use
          saveToken(t);
          setToken(t);
        },
        () => undefined, // the sign-in form, then
      )
      .catch(() => undefined)
      .finally(() => setFetching(false));
  }, [fetching, endpoint]);
  const signIn = (t: string) => {
    saveToken(t);
    setToken(t);
  };
  const signOut = () => {
    forgetToken();
    setToken("");
  };
  return (
    <ToastProvider>
      {token ? (
        <Shell key={token} token={token} endpoint={endpoint} onSignOut={signOut} />
      ) : fetching ? (
        <p class="loading">Signing in…</p>
      ) : (
        <SignIn onToken={signIn} />
      )}
    </ToastProvider>
  );
}

interface Session {
  client: ProjectManagementWebSocketClient;
  manager: ProjectStateManager;
}

/** Ask is the token source waiting for the person to give a new token. */
interface Ask {
  reason: TokenReason;
  error?: PmError;
  resolve: (token: string) => void;
}

function Shell({ token, endpoint, onSignOut }: { token: string; endpoint: string; onSignOut: () => void }) {
  const toast = useToast();
  const [ask, setAsk] = useState<Ask | undefined>();
  const session = useMemo<Session>(() => {
    // Tokens from the endpoint, silently; else from the person, asked a
    // little before expiry in a banner that keeps the board open.
    const tokenSource: TokenSource = endpoint
      ? endpointTokenSource(endpoint)
      : {
          maxLeadMs: ASK_LEAD_MS,
          next: (reason, error) => new Promise<string>((resolve) => setAsk({ reason, error, resolve })),
        };
    const client = new ProjectManagementWebSocketClient({ url: wsURL(), token, tokenSource });
    return { client, manager: new ProjectStateManager(client) };
  }, [token, endpoint]);
  const [route, setRoute] = useState<Route>(readRoute);
  const [expiredBanner, setExpired] = useState("");
  const [projectTitle, setProjectTitle] = useState("");

  useEffect(() => {
    const { client, manager } = session;
    const offProblem = client.onProblem((p: Problem) => {
      if (p.kind === "token-expired") setExpired(p.message);
      else toast("error", p.message);
    });
    const offToken = client.onToken(saveToken); // a reload carries on with the newest token
    const online = () => client.reconnectNow();
    // Changes not yet answered would be lost with the page: ask first.
    const leaving = (e: BeforeUnloadEvent) => {
      if (client.pendingCount > 0) e.preventDefault();
    };
    window.addEventListener("online", online);
    window.addEventListener("beforeunload", leaving);
    client.connect();
    return () => {
      offProblem();
      offToken();
      window.removeEventListener("online", online);
      window.removeEventListener("beforeunload", leaving);
      manager.dispose();
      client.close();
    };
  }, [session, toast]);

  useEffect(() => {
    const on = () => setRoute(readRoute());
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);

  const answer = (t: string) => {
    ask?.resolve(t);
    setAsk(undefined);
  };

  const renew = (t: string) => {
    session.client.setToken(t); // the same user keeps the edits waiting to be sent
    saveToken(t);
    setExpired("");
  };

  return (
    <div class="shell">
      <TopBar client={session.client} route={route} projectTitle={route.project ? projectTitle : ""} onSignOut={onSignOut} />
      {ask?.reason === "refresh" && (
        <RenewBanner expiresAt={session.client.claims.exp} expectSub={session.client.claims.sub} error={ask.error} onToken={answer} />
      )}
      <main class="main" id="main">
        {route.project ? (
          <ProjectView key={route.project} manager={session.manager} route={route} onTitle={setProjectTitle} />
        ) : (
          <Dashboard manager={session.manager} />
        )}
      </main>
      <ConflictDialog manager={session.manager} />
      {ask?.reason === "expired" && (
        <SignIn
          modal
          message={ask.error ? `Your session has expired. ${ask.error.message}` : "Your session has expired. Sign in again to carry on."}
          expectSub={session.client.claims.sub}
          onToken={answer}
          onCancel={onSignOut}
          cancelLabel="Sign out"
        />
      )}
      {expiredBanner && (
        <SignIn
          modal
          message={expiredBanner}
          expectSub={session.client.claims.sub}
          onToken={renew}
          onCancel={onSignOut}
          cancelLabel="Sign out"
        />
      )}
    </div>
  );
}
