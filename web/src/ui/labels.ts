import {
  ActivityAction,
  ProjectRole,
  WorkItemPriority,
  WorkItemStatus,
  WorkItemType,
} from "../gen/pm/v1/messages_pb";

/** Names and CSS class suffixes of the enums, as the board shows them. */
export const statusInfo: Record<number, { label: string; slug: string }> = {
  [WorkItemStatus.BACKLOG]: { label: "Backlog", slug: "backlog" },
  [WorkItemStatus.TODO]: { label: "To do", slug: "todo" },
  [WorkItemStatus.IN_PROGRESS]: { label: "In progress", slug: "in_progress" },
  [WorkItemStatus.REVIEW]: { label: "Review", slug: "review" },
  [WorkItemStatus.DONE]: { label: "Done", slug: "done" },
};

export const typeInfo: Record<number, { label: string; slug: string; rank: number }> = {
  [WorkItemType.PROJECT]: { label: "Project", slug: "project", rank: 4 },
  [WorkItemType.EPIC]: { label: "Epic", slug: "epic", rank: 3 },
  [WorkItemType.STORY]: { label: "Story", slug: "story", rank: 2 },
  [WorkItemType.TASK]: { label: "Task", slug: "task", rank: 1 },
};

export const priorityInfo: Record<number, { label: string; slug: string }> = {
  [WorkItemPriority.LOW]: { label: "Low", slug: "low" },
  [WorkItemPriority.MEDIUM]: { label: "Medium", slug: "medium" },
  [WorkItemPriority.HIGH]: { label: "High", slug: "high" },
  [WorkItemPriority.CRITICAL]: { label: "Critical", slug: "critical" },
};

export const roleLabel: Record<number, string> = {
  [ProjectRole.VIEWER]: "Viewer",
  [ProjectRole.EDITOR]: "Editor",
  [ProjectRole.ADMIN]: "Admin",
};

export const actionLabel: Record<number, string> = {
  [ActivityAction.CREATED]: "created",
  [ActivityAction.UPDATED]: "updated",
  [ActivityAction.DELETED]: "deleted",
  [ActivityAction.MEMBER_ADDED]: "added member",
  [ActivityAction.MEMBER_ROLE_CHANGED]: "changed the role of",
  [ActivityAction.MEMBER_REMOVED]: "removed member",
};

export const ITEM_TYPES = [WorkItemType.EPIC, WorkItemType.STORY, WorkItemType.TASK] as const;
export const PRIORITIES = [
  WorkItemPriority.LOW,
  WorkItemPriority.MEDIUM,
  WorkItemPriority.HIGH,
  WorkItemPriority.CRITICAL,
] as const;

/** initials of a display name, for avatars. */
export function initials(name: string): string {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  if (parts.length === 0) return "?";
  return ((parts[0]![0] ?? "") + (parts.length > 1 ? (parts.at(-1)![0] ?? "") : "")).toUpperCase();
}

/** hue picks a stable avatar colour class (0..7) for a user id. */
export function hue(id: string): number {
  let h = 0;
  for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) >>> 0;
  return h % 8;
}

/** ago says how long ago a unix-ms time was, briefly. */
export function ago(ms: number, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 45) return "just now";
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `${h} h ago`;
  return new Date(ms).toLocaleDateString();
}
