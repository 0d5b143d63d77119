// Package pmv1 is pm's wire protocol, generated from messages.proto (what
// clients and nodes exchange over WebSocket) and bus.proto (what nodes
// exchange through Redis). Regenerate with `make generate`; docs/protocol.md
// describes the conversation.
package pmv1
