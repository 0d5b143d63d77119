// Helpers for the UI tests: a manager connected to an in-memory node.
import { WorkItemPriority, WorkItemStatus, WorkItemType, type WorkItem } from "../gen/pm/v1/messages_pb";
import { ProjectManagementWebSocketClient, ProjectStateManager, STATUSES, generateKeyBetween } from "../client";
import { FakeNet, FakeNode, item, token } from "../client/fakes";

export const P = "de300000-0000-4000-8000-000000000001";
export const ME = "a11ce000-0000-4000-8000-000000000001";

/** items makes n tasks spread over the columns, with positions, priorities and points. */
export function items(n: number): WorkItem[] {
  const out: WorkItem[] = [];
  let pos: string | null = null;
  for (let i = 0; i < n; i++) {
    pos = generateKeyBetween(pos, null);
    out.push(
      item({
        id: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
        parentId: P,
        itemType: i % 10 === 0 ? WorkItemType.STORY : WorkItemType.TASK,
        title: `Item ${i}`,
        status: STATUSES[i % 5],
        priority: (1 + (i % 4)) as WorkItemPriority,
        storyPoints: i % 3 === 0 ? undefined : i % 8,
        assigneeId: i % 2 ? ME : "",
        position: pos,
      }),
    );
  }
  return out;
}

/** connect makes a node with a project of n items and a manager connected to it. */
export async function connect(n: number, role = 3) {
  const net = new FakeNet();
  const node = new FakeNode(ME);
  net.onSocket = (s) => {
    node.serve(s);
    setTimeout(() => s.open(), 0);
  };
  node.addProject(P, items(n));
  node.addMember(P, ME, role, "Ada Lovelace");
  const client = new ProjectManagementWebSocketClient({ url: "ws://t/ws", token: token({ sub: ME, name: "Ada Lovelace" }), createSocket: net.create });
  const manager = new ProjectStateManager(client);
  client.connect();
  const replica = manager.open(P);
  await manager.loadMembers(P);
  while (replica.status !== "ready") await new Promise((r) => setTimeout(r, 1));
  return { net, node, client, manager, replica };
}

export const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

export { WorkItemStatus };
