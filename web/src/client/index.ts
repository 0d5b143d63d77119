// The board's client module: framework-free, usable from any UI (or a
// browser test). See web/README.md for its API.
export { backoffDelay, type Backoff } from "./backoff";
export { PmError, describeError, isCode, isRefusal, type ErrorCode } from "./errors";
export { decodeClaims, expired, refreshDelayMs, type Claims } from "./jwt";
export {
  ConflictError,
  ProjectStateManager,
  applyPatch,
  type Conflict,
  type ItemPatch,
  type ManagerOptions,
  type NewItem,
} from "./manager";
export { positionAt } from "./moves";
export { FIRST_KEY, MAX_KEY_LENGTH, generateKeyBetween, invalidKey } from "./position";
export { STATUSES, WorkItemState, byPosition, eventOf, type Change, type ItemEvent, type Outcome } from "./replica";
export {
  ProjectManagementWebSocketClient,
  type ClientOptions,
  type ConnectionState,
  type PayloadInit,
  type Problem,
  type RequestOptions,
  type WebSocketLike,
} from "./socket";
export { endpointTokenSource, tokenURL, type TokenReason, type TokenSource } from "./tokens";
