package pubsub_test

import (
	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/pubsub"
)

// The hub and the ledger are what the node needs.
var (
	_ node.Fanout      = (*pubsub.Hub)(nil)
	_ node.Idempotency = (*pubsub.Ledger)(nil)
)
