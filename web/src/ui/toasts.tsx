import { createContext } from "preact";
import { useCallback, useContext, useMemo, useState } from "preact/hooks";
import type { ComponentChildren } from "preact";

export interface Toast {
  id: number;
  kind: "error" | "info";
  text: string;
}

interface Toaster {
  show: (kind: Toast["kind"], text: string) => void;
}

const Ctx = createContext<Toaster>({ show: () => undefined });

/** useToast returns the function that shows a message at the bottom of the page. */
export function useToast(): Toaster["show"] {
  const { show } = useContext(Ctx);
  return show;
}

let nextId = 1;

/** Toasts shows short messages; errors stay until dismissed, the rest fade after 5 s. */
export function ToastProvider({ children }: { children: ComponentChildren }) {
  const [toasts, setToasts] = useState<Toast[]>([]);
  const dismiss = useCallback((id: number) => setToasts((t) => t.filter((x) => x.id !== id)), []);
  const show = useCallback(
    (kind: Toast["kind"], text: string) => {
      const id = nextId++;
      setToasts((t) => [...t.slice(-3), { id, kind, text }]);
      if (kind === "info") setTimeout(() => dismiss(id), 5000);
    },
    [dismiss],
  );
  const value = useMemo(() => ({ show }), [show]);
  return (
    <Ctx.Provider value={value}>
      {children}
      <div class="toasts" role="status" aria-live="polite" data-testid="toasts">
        {toasts.map((t) => (
          <div key={t.id} class={`toast toast-${t.kind}`} data-testid={`toast-${t.kind}`}>
            <span>{t.text}</span>
            <button type="button" class="icon-button" aria-label="Dismiss" onClick={() => dismiss(t.id)}>
              ×
            </button>
          </div>
        ))}
      </div>
    </Ctx.Provider>
  );
}
