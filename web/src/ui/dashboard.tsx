import { useCallback, useEffect, useState } from "preact/hooks";
import { describeError, isCode, type ProjectStateManager } from "../client";
import type { ProjectSummary } from "../gen/pm/v1/messages_pb";
import { STATUSES } from "../client";
import { roleLabel, statusInfo } from "./labels";
import { routeHref } from "./session";
import { useToast } from "./toasts";

/** Dashboard lists the user's projects with their counts, and creates projects. */
export function Dashboard({ manager }: { manager: ProjectStateManager }) {
  const toast = useToast();
  const [projects, setProjects] = useState<ProjectSummary[] | undefined>();
  const [error, setError] = useState("");
  const load = useCallback(() => {
    manager.listProjects().then(
      (p) => {
        setProjects(p);
        setError("");
      },
      (err: unknown) => setError(describeError(err)),
    );
  }, [manager]);
  useEffect(() => {
    load();
    // Counts change while we look: refresh on every (re)connection.
    return manager.client.onConnected(load);
  }, [manager, load]);

  const [title, setTitle] = useState("");
  const [fieldError, setFieldError] = useState("");
  const [busy, setBusy] = useState(false);
  const create = (e: Event) => {
    e.preventDefault();
    setBusy(true);
    manager.createProject(title.trim()).then(
      (p) => {
        setBusy(false);
        setTitle("");
        toast("info", `Project “${p.title}” created.`);
        location.hash = routeHref({ project: p.id });
      },
      (err: unknown) => {
        setBusy(false);
        if (isCode(err, "VALIDATION_ERROR") && err.field === "title") setFieldError(err.message);
        else toast("error", describeError(err));
      },
    );
  };

  return (
    <section class="dashboard" data-testid="dashboard" aria-labelledby="dash-title">
      <div class="page-head">
        <h1 id="dash-title">Projects</h1>
        <form class="inline-form" onSubmit={create} data-testid="new-project-form">
          <label class="sr-only" for="new-project-title">
            New project title
          </label>
          <input
            id="new-project-title"
            type="text"
            placeholder="New project title"
            maxLength={500}
            value={title}
            aria-invalid={fieldError ? "true" : undefined}
            aria-describedby={fieldError ? "new-project-error" : undefined}
            onInput={(e) => {
              setTitle(e.currentTarget.value);
              setFieldError("");
            }}
          />
          <button type="submit" class="button primary" disabled={!title.trim() || busy}>
            Create project
          </button>
          {fieldError && (
            <p id="new-project-error" class="field-error">
              {fieldError}
            </p>
          )}
        </form>
      </div>
      {error && (
        <p class="notice notice-error" role="alert">
          Could not load your projects: {error}{" "}
          <button type="button" class="link-button" onClick={load}>
            Try again
          </button>
        </p>
      )}
      {!projects && !error && <p class="muted">Loading projects…</p>}
      {projects && projects.length === 0 && (
        <div class="empty" data-testid="dashboard-empty">
          <h2>No projects yet</h2>
          <p>Create the first one above; you will be its admin and can invite your team.</p>
        </div>
      )}
      {projects && projects.length > 0 && (
        <ul class="project-grid" aria-label="Your projects">
          {projects.map((p) => (
            <li key={p.project?.id}>
              <ProjectCard summary={p} />
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

function ProjectCard({ summary }: { summary: ProjectSummary }) {
  const w = summary.project;
  if (!w) return null;
  const counts = new Map(summary.counts.map((c) => [c.status, Number(c.count)]));
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  const done = counts.get(STATUSES[4]) ?? 0;
  return (
    <a class="project-card" href={routeHref({ project: w.id })} data-testid="project-card" data-id={w.id}>
      <div class="project-card-head">
        <h2>{w.title}</h2>
        <span class="badge">{roleLabel[summary.role] ?? "Member"}</span>
      </div>
      {w.description && <p class="project-desc">{w.description}</p>}
      <div class="bar" role="img" aria-label={`${done} of ${total} items done`}>
        {STATUSES.map((s) => {
          const n = counts.get(s) ?? 0;
          return n > 0 ? <span key={s} class={`bar-seg status-bg-${statusInfo[s]!.slug}`} style={{ flexGrow: n }} /> : null;
        })}
      </div>
      <dl class="counts">
        {STATUSES.map((s) => (
          <div key={s} class="count">
            <dt>{statusInfo[s]!.label}</dt>
            <dd data-testid={`count-${statusInfo[s]!.slug}`}>{counts.get(s) ?? 0}</dd>
          </div>
        ))}
      </dl>
    </a>
  );
}
