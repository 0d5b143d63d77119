import { useEffect, useMemo, useState } from "preact/hooks";
import {
  ProjectManagementWebSocketClient,
  ProjectStateManager,
  decodeClaims,
  expired,
  type Problem,
} from "../client";
import { ConflictDialog } from "./conflict";
import { Dashboard } from "./dashboard";
import { ProjectView } from "./project";
import { forgetToken, readRoute, saveToken, takeToken, wsURL, type Route } from "./session";
import { SignIn } from "./signin";
import { ToastProvider, useToast } from "./toasts";
import { TopBar } from "./topbar";

/** App is the whole board: the sign-in form, or the signed-in shell. */
export function App() {
  const [token, setToken] = useState(() => {
    const t = takeToken();
    try {
      if (t && !expired(decodeClaims(t), Date.now())) return t;
    } catch {
      // not a token: sign in again
    }
    return "";
  });
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
      {token ? <Shell key={token} token={token} onSignOut={signOut} /> : <SignIn onToken={signIn} />}
    </ToastProvider>
  );
}

interface Session {
  client: ProjectManagementWebSocketClient;
  manager: ProjectStateManager;
}

function Shell({ token, onSignOut }: { token: string; onSignOut: () => void }) {
  const toast = useToast();
  const session = useMemo<Session>(() => {
    const client = new ProjectManagementWebSocketClient({ url: wsURL(), token });
    return { client, manager: new ProjectStateManager(client) };
  }, [token]);
  const [route, setRoute] = useState<Route>(readRoute);
  const [expiredBanner, setExpired] = useState("");
  const [projectTitle, setProjectTitle] = useState("");

  useEffect(() => {
    const { client, manager } = session;
    const offProblem = client.onProblem((p: Problem) => {
      if (p.kind === "token-expired") setExpired(p.message);
      else toast("error", p.message);
    });
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

  const renew = (t: string) => {
    session.client.setToken(t); // the same user keeps the edits waiting to be sent
    saveToken(t);
    setExpired("");
  };

  return (
    <div class="shell">
      <TopBar client={session.client} route={route} projectTitle={route.project ? projectTitle : ""} onSignOut={onSignOut} />
      <main class="main" id="main">
        {route.project ? (
          <ProjectView key={route.project} manager={session.manager} route={route} onTitle={setProjectTitle} />
        ) : (
          <Dashboard manager={session.manager} />
        )}
      </main>
      <ConflictDialog manager={session.manager} />
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
