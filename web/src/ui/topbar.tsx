import type { ProjectManagementWebSocketClient } from "../client";
import { useConnection } from "./hooks";
import { hue, initials } from "./labels";
import { routeHref, type Route } from "./session";

interface Props {
  client: ProjectManagementWebSocketClient;
  route: Route;
  /** The open project's title, once loaded. */
  projectTitle: string;
  onSignOut: () => void;
}

/** TopBar: where you are, the connection, and who is signed in. */
export function TopBar({ client, route, projectTitle, onSignOut }: Props) {
  const claims = client.claims;
  const name = claims.name || claims.email || claims.sub.slice(0, 8);
  return (
    <header class="topbar">
      <nav class="crumbs" aria-label="Breadcrumb">
        <a class="brand" href="#" aria-label="All projects">
          <span class="logo" aria-hidden="true">
            pm
          </span>
        </a>
        <a href="#" class="crumb">
          Projects
        </a>
        {route.project && (
          <>
            <span class="crumb-sep" aria-hidden="true">
              /
            </span>
            <a href={routeHref(route)} class="crumb crumb-current" aria-current="page">
              {projectTitle || "…"}
            </a>
          </>
        )}
      </nav>
      <div class="topbar-right">
        <ConnectionIndicator client={client} />
        <div class="user" data-testid="user" title={`${name} · tenant ${claims.tenantId}`}>
          <span class={`avatar hue-${hue(claims.sub)}`} aria-hidden="true">
            {initials(name)}
          </span>
          <span class="user-text">
            <span class="user-name" data-testid="user-name">
              {name}
            </span>
            <span class="user-tenant" data-testid="user-tenant">
              {claims.tenantId}
            </span>
          </span>
        </div>
        <button
          type="button"
          class="button subtle"
          data-testid="sign-out"
          onClick={() => {
            if (client.pendingCount > 0 && !confirm(`${client.pendingCount} change(s) are not saved yet. Sign out anyway?`)) return;
            onSignOut();
          }}
        >
          Sign out
        </button>
      </div>
    </header>
  );
}

const stateText = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", offline: "Offline" };

/** ConnectionIndicator shows live / reconnecting / offline, and unsaved changes. */
export function ConnectionIndicator({ client }: { client: ProjectManagementWebSocketClient }) {
  const { state, pending } = useConnection(client);
  const waiting = state !== "live" && pending > 0;
  return (
    <div class={`conn conn-${state}`} data-testid="connection-status" data-state={state} role="status" aria-live="polite">
      <span class="conn-dot" aria-hidden="true" />
      <span>{stateText[state]}</span>
      {waiting && <span class="conn-pending"> · {pending} waiting to be sent</span>}
      {state === "offline" && client.nextRetryAt > 0 && (
        <button type="button" class="link-button" onClick={() => client.reconnectNow()}>
          Retry now
        </button>
      )}
    </div>
  );
}
