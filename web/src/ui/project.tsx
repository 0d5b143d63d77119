import { useCallback, useEffect, useState } from "preact/hooks";
import { describeError, type ProjectStateManager } from "../client";
import { ProjectRole, type WorkItem } from "../gen/pm/v1/messages_pb";
import { ActivityPanel } from "./activity";
import { Board } from "./board";
import { useReplica } from "./hooks";
import { ItemDialog } from "./item-dialog";
import { ListView } from "./list";
import { MembersPanel } from "./members";
import { routeHref, type Route } from "./session";
import { useToast } from "./toasts";

/** Editing is what the UI needs to know to show (or hide) editing controls. */
export interface Editing {
  canEdit: boolean;
  isAdmin: boolean;
}

type Panel = { kind: "none" } | { kind: "create" } | { kind: "edit"; id: string } | { kind: "members" } | { kind: "activity" };

/** ProjectView opens a project's replica and shows it as a board or a tree. */
export function ProjectView({ manager, route, onTitle }: { manager: ProjectStateManager; route: Route; onTitle: (t: string) => void }) {
  const toast = useToast();
  const [replica] = useState(() => manager.open(route.project));
  useReplica(replica);
  const [, setMembersVersion] = useState(0);
  const [panel, setPanel] = useState<Panel>({ kind: "none" });
  const openItem = useCallback((w: WorkItem) => setPanel({ kind: "edit", id: w.id }), []);

  useEffect(() => {
    const load = () => manager.loadMembers(route.project).catch((err: unknown) => toast("error", `Members: ${describeError(err)}`));
    void load();
    const off = manager.onMembers((id) => id === route.project && setMembersVersion((n) => n + 1));
    const offConn = manager.client.onConnected(() => void load());
    return () => {
      off();
      offConn();
      manager.close(route.project);
    };
  }, [manager, route.project, toast]);

  const title = replica.project?.title ?? "";
  useEffect(() => {
    onTitle(title);
    document.title = title ? `${title} · pm` : "pm board";
  }, [title, onTitle]);

  const role = manager.roleOf(route.project);
  const editing: Editing = {
    canEdit: role === ProjectRole.EDITOR || role === ProjectRole.ADMIN,
    isAdmin: role === ProjectRole.ADMIN,
  };

  if (replica.status === "closed") {
    return (
      <div class="empty" role="alert" data-testid="project-closed">
        <h2>This project is closed</h2>
        <p>{replica.closedReason}</p>
        <a class="button" href="#">
          Back to your projects
        </a>
      </div>
    );
  }
  if (replica.status === "loading") {
    return (
      <p class="muted loading" data-testid="project-loading">
        Loading the board…
      </p>
    );
  }
  const project = replica.project;
  return (
    <section class="project" data-testid="project" aria-labelledby="project-title">
      <div class="page-head">
        <div>
          <h1 id="project-title">{project?.title}</h1>
          {project?.description && <p class="project-desc">{project.description}</p>}
        </div>
        <div class="toolbar" role="toolbar" aria-label="Project">
          <div class="segmented" role="group" aria-label="View">
            <a href={routeHref({ project: route.project, view: "board" })} aria-current={route.view === "board" ? "page" : undefined} data-testid="view-board">
              Board
            </a>
            <a href={routeHref({ project: route.project, view: "list" })} aria-current={route.view === "list" ? "page" : undefined} data-testid="view-list">
              List
            </a>
          </div>
          <button type="button" class="button" onClick={() => setPanel({ kind: "activity" })} data-testid="open-activity">
            Activity
          </button>
          <button type="button" class="button" onClick={() => setPanel({ kind: "members" })} data-testid="open-members">
            Members
          </button>
          {editing.canEdit && (
            <button type="button" class="button primary" onClick={() => setPanel({ kind: "create" })} data-testid="new-item">
              New item
            </button>
          )}
        </div>
      </div>
      {route.view === "list" ? (
        <ListView manager={manager} replica={replica} onOpen={openItem} />
      ) : (
        <Board manager={manager} replica={replica} editing={editing} onOpen={openItem} />
      )}
      {panel.kind === "create" && <ItemDialog manager={manager} replica={replica} editing={editing} onClose={() => setPanel({ kind: "none" })} />}
      {panel.kind === "edit" && (
        <ItemDialog manager={manager} replica={replica} editing={editing} itemId={panel.id} onClose={() => setPanel({ kind: "none" })} />
      )}
      {panel.kind === "members" && <MembersPanel manager={manager} projectId={route.project} editing={editing} onClose={() => setPanel({ kind: "none" })} />}
      {panel.kind === "activity" && <ActivityPanel manager={manager} replica={replica} onClose={() => setPanel({ kind: "none" })} />}
    </section>
  );
}
