// @vitest-environment happy-dom
import { render } from "preact";
import { afterEach, describe, expect, it } from "vitest";
import { WorkItemType } from "../gen/pm/v1/messages_pb";
import { ListView } from "./list";
import { P, connect, tick } from "./testkit";

let root: HTMLElement;
afterEach(() => {
  render(null, root);
  root.remove();
});

const rows = () => [...root.querySelectorAll<HTMLElement>('[data-testid="tree-row"]')];
const titles = () => rows().map((r) => `${r.getAttribute("aria-level")}:${r.querySelector(".row-title")?.textContent}${r.classList.contains("context") ? "(context)" : ""}`);
function set(testid: string, value: string) {
  const el = root.querySelector<HTMLInputElement>(`[data-testid="${testid}"]`)!;
  el.value = value;
  el.dispatchEvent(new Event(el.tagName === "SELECT" ? "change" : "input", { bubbles: true }));
}

describe("ListView", () => {
  it("shows epic › story › task as a tree and filters it, keeping the path to each match", async () => {
    const { manager, replica, node } = await connect(0);
    node.change(P, "e1", { itemType: WorkItemType.EPIC, title: "Checkout", parentId: P, position: "a0" });
    node.change(P, "s1", { itemType: WorkItemType.STORY, title: "Pay by card", parentId: "e1", position: "a1" });
    node.change(P, "t1", { itemType: WorkItemType.TASK, title: "Card form", parentId: "s1", position: "a2", assigneeId: "u-9" });
    node.change(P, "t2", { itemType: WorkItemType.TASK, title: "Receipt mail", parentId: "s1", position: "a3" });
    node.change(P, "t3", { itemType: WorkItemType.TASK, title: "Loose task", parentId: P, position: "a4" });
    await tick();
    root = document.createElement("div");
    document.body.append(root);
    render(<ListView manager={manager} replica={replica} onOpen={() => undefined} />, root);
    expect(titles()).toEqual(["1:Checkout", "2:Pay by card", "3:Card form", "3:Receipt mail", "1:Loose task"]);

    set("filter-text", "receipt");
    await tick();
    expect(titles()).toEqual(["1:Checkout(context)", "2:Pay by card(context)", "3:Receipt mail"]);

    set("filter-text", "");
    set("filter-type", String(WorkItemType.STORY));
    await tick();
    expect(titles()).toEqual(["1:Checkout(context)", "2:Pay by card"]);

    set("filter-type", "");
    set("filter-assignee", "none");
    await tick();
    expect(titles()).not.toContain("3:Card form");

    set("filter-assignee", "");
    await tick();
    root.querySelector<HTMLElement>('button[aria-label="Collapse Pay by card"]')!.click();
    await tick();
    expect(titles()).toEqual(["1:Checkout", "2:Pay by card", "1:Loose task"]);
    expect(rows()[1]!.getAttribute("aria-expanded")).toBe("false");
  });
});
