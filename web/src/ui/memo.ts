import { Component, h, type FunctionComponent } from "preact";

/**
 * memo renders fn again only when a prop changed (compared with ===): what
 * keeps a 2,000-card board cheap to update. (preact/compat has one too; this
 * spares the bundle compat.)
 */
export function memo<P extends object>(fn: FunctionComponent<P>): FunctionComponent<P> {
  class Memo extends Component<P> {
    override shouldComponentUpdate(next: P): boolean {
      const cur = this.props as Record<string, unknown>;
      const nxt = next as Record<string, unknown>;
      for (const k in nxt) if (k !== "children" && cur[k] !== nxt[k]) return true;
      for (const k in cur) if (!(k in nxt)) return true;
      return false;
    }
    override render(props: P) {
      return h(fn, props);
    }
  }
  (Memo as unknown as { displayName: string }).displayName = `memo(${fn.displayName ?? fn.name})`;
  return Memo as unknown as FunctionComponent<P>;
}
