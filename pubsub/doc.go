// Package pubsub carries project events between pm nodes through Redis
// pub/sub, keeps the node-local table of subscriptions, and keeps the Redis
// ledger of idempotent requests.
//
// # Fan-out (Hub, a node.Fanout)
//
// Every project has one channel, <prefix>events:<tenant>:<project> (with the
// default prefix: pm:events:<tenant>:<project>). Each message on it is an
// encoded pmv1.BusEvent: an event frame with its revision and the subscriber
// id of its author, or a membership removal.
//
// A node holds ONE subscriber connection to Redis. It subscribes a project's
// channel when the project's first local subscriber arrives and unsubscribes
// it when the last one leaves. Hub.Subscribe returns once Redis has confirmed
// the subscription, so events published after it returns reach the
// subscriber. If Redis does not confirm in time (it is unreachable, say),
// Subscribe returns the context's error but the subscriber stays registered;
// the hub keeps trying, and when Redis finally confirms, the project's
// subscribers get ResyncRequired, since the revision they were acknowledged
// at may be stale by then.
//
// One goroutine reads Redis and hands messages to a bounded queue (HandoffSize
// messages); a fan-out goroutine decodes each event once and hands the SAME
// frame bytes to every local subscriber of the project except its author.
// Subscribers must treat the frame as read-only. The reader never waits for
// the fan-out: when the queue is full it drops the event, counts it and tells
// the project's subscribers to resync ("events dropped"). Membership removals
// are never dropped: the reader applies them itself when the queue is full.
//
// Redis pub/sub is fire-and-forget, so the hub watches for loss and turns it
// into ResyncRequired notices (pm.Subscriber), each with a reason:
//
//   - "events dropped": the handoff queue was full.
//   - "redis reconnected": the subscriber connection broke. go-redis
//     reconnects and resubscribes by itself but whatever was published
//     meanwhile is gone; the hub notices the break (a receive error, a PING
//     that went unanswered, or confirmations it did not ask for) and tells
//     every locally subscribed project once Redis has confirmed it again.
//   - "subscription confirmed late": Subscribe gave up waiting before Redis
//     confirmed (see above).
//   - "missed events": the head check. Every HeadCheckInterval the hub reads
//     the head revision of every locally subscribed project in one batched
//     HeadReader call and compares it with the highest revision it has seen
//     through Redis. The rule takes two ticks: a project whose seen revision
//     is still below the head read at the PREVIOUS check has lost events,
//     because an event committed before that read has had a whole interval to
//     arrive. Its subscribers get ResyncRequired and seen is raised to that
//     head. The baseline is the project's head read right after its
//     subscription went live (or, if that read failed, at the first check):
//     seen is raised to it, so a quiet project is never flagged, and a change
//     lost just after subscribing is still caught.
//
// After a resync notice the hub raises the project's seen revision to the head
// of the previous check, which the subscribers' catch-up read covers.
//
// Publish sends an event through Redis even to this node's own subscribers.
// If Redis refuses it, Publish delivers the frame to the local subscribers
// directly (so the author's neighbours on the same node still see it), counts
// the failure and returns the error; other nodes find the gap through the
// next event's revision or the head check. PublishMemberRemoved works the same
// way: every hub drops the user's local subscriptions to the project and calls
// SubscriptionRevoked(project, "removed from project") on each.
//
// Each event carries the time its change committed (Publish's committed) and
// the W3C trace context of Publish's ctx. Every node that hands an event to
// local subscribers, the publishing one included, observes the event's age
// in pm_event_delivery_age_seconds; pm_pubsub_publish_duration_seconds times
// each PUBLISH. With a HubConfig.TracerProvider, the fan-out of a traced
// event runs in one "fanout" span per node, a child of the publisher's span.
//
// # Sharded mode (Redis Cluster)
//
// With HubConfig.Sharded the hub uses SSUBSCRIBE/SPUBLISH, so each channel
// lives on the shard that owns its slot and publishing scales with the
// cluster. A go-redis PubSub is pinned to one node, so the hub keeps one
// sharded PubSub per master, groups channels by the master that owns their
// slot, sends one SSUBSCRIBE per slot (Redis Cluster refuses channels of
// different slots in one command, including the one go-redis sends when it
// resubscribes after a reconnect; the hub answers that CROSSSLOT refusal by
// resubscribing slot by slot), and closes a shard's connection when it has no
// channels left. When Redis answers MOVED (a slot has migrated) the hub
// reloads the cluster map and moves the slot's channels to their new master;
// the affected subscribers get "redis reconnected". Everything else behaves
// as in the unsharded mode.
//
// # Idempotency (Ledger, a node.Idempotency)
//
// The ledger keeps one key per request, <prefix>idem:<tenant>:<user>:<message_id>
// (pm:idem:<tenant>:<user>:<message_id> by default), holding either
// "p:<token>" while the request runs (expires after PendingTTL, so a crashed
// node blocks retries only that long) or "d:" followed by the encoded
// response (expires after TTL). Claim is one SET … NX GET; Complete and
// Release are Lua compare-and-set scripts that act only while the key still
// holds the caller's token. Every Redis call is bounded by OpTimeout, so a
// dead Redis costs a request at most a few OpTimeouts and the node carries on
// without idempotency.
//
// # Redis keys and channels, for operators with redis-cli
//
//	pm:events:<tenant>:<project>       channel; messages are pm.v1.BusEvent (decode with pmctl tail)
//	pm:idem:<tenant>:<user>:<msg id>   string "p:<token>" (pending) or "d:<response>", with a TTL
package pubsub
