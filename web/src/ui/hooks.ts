import { useLayoutEffect, useRef, useState } from "preact/hooks";
import type { ConnectionState, ProjectManagementWebSocketClient, WorkItemState } from "../client";

// The hooks subscribe in layout effects, which run right after the render,
// and catch up with what changed in between: no change is missed.

/** useReplica re-renders on every change of the replica and returns its version. */
export function useReplica(r: WorkItemState | undefined): number {
  const [, set] = useState(0);
  const rendered = r?.version ?? 0;
  useLayoutEffect(() => {
    if (!r) return;
    const off = r.subscribe(() => set((n) => n + 1));
    if (r.version !== rendered) set((n) => n + 1);
    return off;
    // rendered: only the version of the render that subscribed matters.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [r]);
  return rendered;
}

/** HIGHLIGHT_MS is how long a card changed by somebody else stays highlighted. */
export const HIGHLIGHT_MS = 1600;

/** useHighlights returns the ids of items other people changed in the last moment. */
export function useHighlights(r: WorkItemState | undefined): ReadonlySet<string> {
  const [ids, setIds] = useState<ReadonlySet<string>>(new Set());
  const timers = useRef(new Map<string, ReturnType<typeof setTimeout>>());
  useLayoutEffect(() => {
    if (!r) return;
    const t = timers.current;
    const off = r.subscribe((c) => {
      if (!c.remote || !c.ids || c.ids.length === 0) return;
      const changed = c.ids;
      setIds((prev) => new Set([...prev, ...changed]));
      for (const id of changed) {
        clearTimeout(t.get(id));
        t.set(
          id,
          setTimeout(() => {
            t.delete(id);
            setIds((prev) => {
              const next = new Set(prev);
              next.delete(id);
              return next;
            });
          }, HIGHLIGHT_MS),
        );
      }
    });
    return () => {
      off();
      for (const x of t.values()) clearTimeout(x);
      t.clear();
    };
  }, [r]);
  return ids;
}

/** useConnection returns the client's connection state and its count of unanswered requests. */
export function useConnection(c: ProjectManagementWebSocketClient): { state: ConnectionState; pending: number } {
  const [state, setState] = useState(c.state);
  const [pending, setPending] = useState(c.pendingCount);
  useLayoutEffect(() => {
    const a = c.onState(setState);
    const b = c.onPendingCount(setPending);
    setState(c.state);
    setPending(c.pendingCount);
    return () => {
      a();
      b();
    };
  }, [c]);
  return { state, pending };
}
