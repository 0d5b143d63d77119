import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { WorkItemStatus, WorkItemType, WorkItemsListSchema, type WorkItem } from "../gen/pm/v1/messages_pb";
import { item, type ItemInit } from "./fakes";
import { WorkItemState, type Change, type ItemEvent } from "./replica";

const P = "p1";

function upd(id: string, revision: bigint, fields: ItemInit = {}): ItemEvent {
  return { projectId: P, revision, id, item: item({ id, projectId: P, revision, ...fields }), deleted: false };
}
function del(id: string, revision: bigint): ItemEvent {
  return { projectId: P, revision, id, item: item({ id, projectId: P, revision, deletedAt: 5n }), deleted: true };
}
function list(asOf: bigint, items: WorkItem[]) {
  return create(WorkItemsListSchema, { asOfRevision: asOf, workItems: items, projectId: P, complete: true });
}
function loaded(rev = 10n, items: WorkItem[] = []) {
  const r = new WorkItemState(P);
  r.applyList(0n, list(rev, items));
  return r;
}
const titles = (r: WorkItemState) => r.all().map((w) => `${w.id}:${w.title}`);

describe("WorkItemState", () => {
  it("applies events in revision order and buffers the ones past a gap", () => {
    const r = loaded(10n);
    expect(r.applyEvent(upd("a", 11n, { title: "A1" }), true)).toBe("applied");
    expect(r.applyEvent(upd("a", 13n, { title: "A3" }), true)).toBe("gap");
    expect(r.hasGap).toBe(true);
    expect(r.get("a")?.title).toBe("A1");
    expect(r.applyEvent(upd("b", 12n, { title: "B" }), true)).toBe("applied");
    // 12 filled the gap: 13 followed on.
    expect(r.revision).toBe(13n);
    expect(r.get("a")?.title).toBe("A3");
    expect(r.hasGap).toBe(false);
  });

  it("ignores duplicate and older events", () => {
    const r = loaded(10n);
    r.applyEvent(upd("a", 11n, { title: "new" }), true);
    expect(r.applyEvent(upd("a", 11n, { title: "dup" }), true)).toBe("stale");
    expect(r.applyEvent(upd("a", 9n, { title: "old" }), true)).toBe("stale");
    expect(r.get("a")?.title).toBe("new");
    expect(r.revision).toBe(11n);
  });

  it("keeps events that come before the first load, and applies those the load does not cover", () => {
    const r = new WorkItemState(P);
    expect(r.applyEvent(upd("a", 5n, { title: "covered" }), true)).toBe("buffered");
    expect(r.applyEvent(upd("b", 7n, { title: "after" }), true)).toBe("buffered");
    r.applyList(0n, list(6n, [item({ id: "a", title: "loaded", revision: 5n })]));
    expect(r.status).toBe("ready");
    expect(r.revision).toBe(7n);
    expect(titles(r)).toContain("a:loaded");
    expect(titles(r)).toContain("b:after");
  });

  it("merges a resync answer newest-wins, with tombstones", () => {
    const r = loaded(10n, [item({ id: "a", title: "A", revision: 3n }), item({ id: "b", title: "B", revision: 4n })]);
    r.applyEvent(upd("c", 11n, { title: "C" }), true);
    r.applyEvent(upd("a", 13n, { title: "A13" }), true); // gap: 12 missing
    const changes: Change[] = [];
    r.subscribe((c) => changes.push(c));
    const ok = r.applyList(
      11n,
      list(12n, [item({ id: "b", title: "B12", revision: 12n }), { ...item({ id: "c", revision: 12n }), deletedAt: 9n }]),
    );
    expect(ok).toBe(true);
    expect(r.revision).toBe(13n);
    expect(titles(r).sort()).toEqual(["a:A13", "b:B12"]);
    expect(changes[0]?.ids).toEqual(expect.arrayContaining(["b", "c", "a"]));
  });

  it("refuses a resync answer from beyond what it has", () => {
    const r = loaded(10n);
    expect(r.applyList(12n, list(15n, []))).toBe(false);
    expect(r.revision).toBe(10n);
  });

  it("never lets an older state replace a newer one", () => {
    const r = loaded(10n, [item({ id: "a", title: "new", revision: 9n })]);
    r.applyList(5n, list(10n, [item({ id: "a", title: "old", revision: 7n })]));
    expect(r.get("a")?.title).toBe("new");
  });

  it("removes deleted items", () => {
    const r = loaded(10n, [item({ id: "a", revision: 2n })]);
    r.applyEvent(del("a", 11n), true);
    expect(r.get("a")).toBeUndefined();
    expect(r.all()).toHaveLength(0);
  });

  it("orders columns byte-wise by position, then id, without the project", () => {
    const r = loaded(10n, [
      item({ id: P, itemType: WorkItemType.PROJECT, position: "a0" }),
      item({ id: "x", position: "a1", status: WorkItemStatus.TODO }),
      item({ id: "w", position: "a1", status: WorkItemStatus.TODO }),
      item({ id: "v", position: "Zz", status: WorkItemStatus.TODO }),
      item({ id: "u", position: "a0V", status: WorkItemStatus.TODO }),
      item({ id: "d", position: "a0", status: WorkItemStatus.DONE }),
    ]);
    expect(r.column(WorkItemStatus.TODO).map((w) => w.id)).toEqual(["v", "u", "w", "x"]);
    expect(r.column(WorkItemStatus.DONE).map((w) => w.id)).toEqual(["d"]);
    expect(r.column(WorkItemStatus.BACKLOG)).toEqual([]);
  });

  it("shows own changes over the server's state until answered", () => {
    const r = loaded(10n, [item({ id: "a", title: "A", status: WorkItemStatus.TODO, revision: 2n })]);
    r.setOverlay("a", (s) => (s ? { ...s, status: WorkItemStatus.DONE } : null));
    expect(r.column(WorkItemStatus.DONE).map((w) => w.id)).toEqual(["a"]);
    expect(r.isPending("a")).toBe(true);
    // Somebody else's change shows through.
    r.applyEvent(upd("a", 11n, { title: "theirs", status: WorkItemStatus.TODO }), true);
    expect(r.get("a")).toMatchObject({ title: "theirs", status: WorkItemStatus.DONE });
    expect(r.serverItem("a")?.status).toBe(WorkItemStatus.TODO);
    r.clearOverlay("a");
    expect(r.get("a")?.status).toBe(WorkItemStatus.TODO);
  });

  it("tells listeners which items changed and whether remotely", () => {
    const r = loaded(10n);
    const changes: Change[] = [];
    r.subscribe((c) => changes.push(c));
    r.applyEvent(upd("a", 11n), true);
    r.applyEvent(upd("b", 12n), false);
    expect(changes).toEqual([
      { ids: ["a"], remote: true },
      { ids: ["b"], remote: false },
    ]);
  });

  it("applies nothing once closed", () => {
    const r = loaded(10n);
    r.close("removed from the project");
    expect(r.status).toBe("closed");
    expect(r.closedReason).toBe("removed from the project");
    expect(r.applyEvent(upd("a", 11n), true)).toBe("stale");
  });
});
