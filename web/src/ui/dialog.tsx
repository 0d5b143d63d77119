import type { ComponentChildren } from "preact";
import { useEffect, useRef } from "preact/hooks";

interface Props {
  title: string;
  onClose: () => void;
  children: ComponentChildren;
  testid: string;
  /** alertdialog for choices the person must make (no close on Escape). */
  alert?: boolean;
  wide?: boolean;
}

/**
 * Dialog is a modal: focus moves into it and stays there (Tab wraps), Escape
 * closes it (unless it is an alert), and focus goes back where it was.
 */
export function Dialog({ title, onClose, children, testid, alert, wide }: Props) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const before = document.activeElement as HTMLElement | null;
    const el = ref.current;
    const first =
      el?.querySelector<HTMLElement>("[autofocus]:not(:disabled)") ??
      el?.querySelector<HTMLElement>("input:not(:disabled), select:not(:disabled), textarea:not(:disabled)") ??
      el?.querySelector<HTMLElement>(".dialog-head ~ * button:not(:disabled)");
    (first ?? el)?.focus();
    return () => before?.focus?.();
  }, []);
  const onKeyDown = (e: KeyboardEvent) => {
    if (e.key === "Escape" && !alert) {
      e.stopPropagation();
      onClose();
      return;
    }
    if (e.key !== "Tab" || !ref.current) return;
    const f = [...ref.current.querySelectorAll<HTMLElement>("a[href], button, input, select, textarea, [tabindex='0']")].filter(
      (x) => !x.hasAttribute("disabled"),
    );
    if (f.length === 0) return;
    const first = f[0]!;
    const last = f.at(-1)!;
    if (e.shiftKey && document.activeElement === first) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && document.activeElement === last) {
      e.preventDefault();
      first.focus();
    }
  };
  return (
    <div class="backdrop" onMouseDown={(e) => e.target === e.currentTarget && !alert && onClose()}>
      <div
        ref={ref}
        class={`dialog${wide ? " dialog-wide" : ""}`}
        role={alert ? "alertdialog" : "dialog"}
        aria-modal="true"
        aria-labelledby={`${testid}-title`}
        data-testid={testid}
        tabIndex={-1}
        onKeyDown={onKeyDown}
      >
        <header class="dialog-head">
          <h2 id={`${testid}-title`}>{title}</h2>
          {!alert && (
            <button type="button" class="icon-button" aria-label="Close" onClick={onClose}>
              ×
            </button>
          )}
        </header>
        {children}
      </div>
    </div>
  );
}
