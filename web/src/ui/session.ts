// Where the board keeps its token and reads its route: the URL fragment
// (/#token=<jwt>&project=<id>, never sent to the server) and sessionStorage
// (this tab only, gone when it closes).

const KEY = "pm.token";

export interface Route {
  /** The open project, or "" for the dashboard. */
  project: string;
  view: "board" | "list";
}

/**
 * takeToken returns the token of this tab: from the URL fragment (which it
 * then removes from the visible URL and history) or from sessionStorage.
 */
export function takeToken(): string {
  const params = new URLSearchParams(location.hash.slice(1));
  const fromUrl = params.get("token");
  if (fromUrl) {
    params.delete("token");
    const rest = params.toString();
    history.replaceState(history.state, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
    saveToken(fromUrl);
    return fromUrl;
  }
  try {
    return sessionStorage.getItem(KEY) ?? "";
  } catch {
    return "";
  }
}

export function saveToken(token: string): void {
  try {
    sessionStorage.setItem(KEY, token);
  } catch {
    // Storage off: the token lives as long as the page.
  }
}

export function forgetToken(): void {
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    // nothing kept
  }
}

export function readRoute(): Route {
  const params = new URLSearchParams(location.hash.slice(1));
  return { project: params.get("project") ?? "", view: params.get("view") === "list" ? "list" : "board" };
}

/** routeHref is the fragment link of a route. */
export function routeHref(r: Partial<Route>): string {
  if (!r.project) return "#";
  return `#project=${encodeURIComponent(r.project)}${r.view === "list" ? "&view=list" : ""}`;
}

/** wsURL is the node's WebSocket endpoint on the page's own host. */
export function wsURL(): string {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}
