package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// tailCmd subscribes to a project's Redis channel (or to every project of a
// tenant) and prints each BusEvent, until ctx ends.
func tailCmd(ctx context.Context, e env, args []string) error {
	f := newFlags(e, "tail", "-tenant T [-project UUID] [-redis-url URL] [-prefix pm:] [-json]")
	var tenant, project, redisURL, prefix string
	var cluster, asJSON bool
	f.str(&tenant, "tenant", "PM_TENANT", "", "tenant id")
	f.str(&project, "project", "PM_PROJECT", "", "project UUID; empty: every project of the tenant (not with -redis-cluster)")
	f.str(&redisURL, "redis-url", "PM_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis URL")
	f.str(&prefix, "prefix", "PM_REDIS_PREFIX", "pm:", "prefix of pm's Redis keys and channels")
	f.boolean(&cluster, "redis-cluster", "PM_REDIS_CLUSTER", false, "Redis Cluster with sharded pub/sub (SSUBSCRIBE)")
	f.boolean(&asJSON, "json", "", false, "print each event as one line of JSON (protojson of the message)")
	if err := f.parse(args); err != nil {
		return err
	}
	if err := f.required(map[string]string{"tenant": tenant}); err != nil {
		return err
	}
	if project != "" {
		id, err := f.uuidFlag("project", project, false)
		if err != nil {
			return err
		}
		project = id.String()
	} else if cluster {
		return f.fail("-project is required with -redis-cluster (sharded channels cannot be matched by pattern)")
	}

	ps, closeRedis, err := subscribeEvents(ctx, redisURL, cluster, prefix, tenant, project)
	if err != nil {
		return err
	}
	defer closeRedis()
	defer ps.Close()
	fmt.Fprintf(e.stderr, "pmctl tail: subscribed to %s%s; Ctrl-C stops\n", prefix+"events:"+tenant+":", cmp.Or(project, "*"))

	p := printer{w: e.stdout, json: asJSON, allProjects: project == ""}
	msgs := ps.ChannelWithSubscriptions(redis.WithChannelSize(1024))
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return nil
			}
			switch m := m.(type) {
			case *redis.Subscription:
				// go-redis resubscribed after losing its connection: events
				// published meanwhile are gone.
				fmt.Fprintf(e.stderr, "pmctl tail: resubscribed to %s after a Redis reconnect; events published meanwhile were missed\n", m.Channel)
			case *redis.Message:
				if err := p.print(m.Channel, []byte(m.Payload), time.Now()); err != nil {
					fmt.Fprintf(e.stderr, "pmctl tail: %s: %v\n", m.Channel, err)
				}
			}
		}
	}
}

// subscribeEvents subscribes to the events channel of a project (or, with
// project "", to those of every project of the tenant) and waits for Redis
// to confirm. It tells stderr which channel it listens to.
func subscribeEvents(ctx context.Context, redisURL string, cluster bool, prefix, tenant, project string) (*redis.PubSub, func(), error) {
	base := prefix + "events:" + tenant + ":"
	if cluster {
		opts, err := redis.ParseClusterURL(redisURL)
		if err != nil {
			return nil, nil, fmt.Errorf("redis cluster URL: %w", err)
		}
		rdb := redis.NewClusterClient(opts)
		ps := rdb.SSubscribe(ctx, base+project)
		if err := confirm(ctx, ps); err != nil {
			_ = ps.Close()
			_ = rdb.Close()
			return nil, nil, err
		}
		return ps, func() { _ = rdb.Close() }, nil
	}
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("redis URL: %w", err)
	}
	rdb := redis.NewClient(opts)
	var ps *redis.PubSub
	if project == "" {
		ps = rdb.PSubscribe(ctx, base+"*")
	} else {
		ps = rdb.Subscribe(ctx, base+project)
	}
	if err := confirm(ctx, ps); err != nil {
		_ = ps.Close()
		_ = rdb.Close()
		return nil, nil, err
	}
	return ps, func() { _ = rdb.Close() }, nil
}

// confirm waits for Redis to confirm the subscription.
func confirm(ctx context.Context, ps *redis.PubSub) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := ps.Receive(ctx)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if _, ok := v.(*redis.Subscription); !ok {
		return fmt.Errorf("subscribe: unexpected reply %T", v)
	}
	return nil
}

// printer writes one line per event.
type printer struct {
	w           io.Writer
	json        bool
	allProjects bool
}

// print decodes one channel message and writes its line.
func (p printer) print(channel string, payload []byte, received time.Time) error {
	var bus pmv1.BusEvent
	if err := proto.Unmarshal(payload, &bus); err != nil {
		return fmt.Errorf("not a BusEvent: %w", err)
	}
	var msg *pmv1.WebSocketMessage
	if frame := bus.GetFrame(); frame != nil {
		msg = new(pmv1.WebSocketMessage)
		if err := proto.Unmarshal(frame, msg); err != nil {
			return fmt.Errorf("revision %d: frame is not a WebSocketMessage: %w", bus.Revision, err)
		}
	}
	var line string
	var err error
	if p.json {
		line, err = jsonLine(channel, &bus, msg)
	} else {
		line = p.humanLine(channel, &bus, msg, received)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(p.w, line)
	return err
}

// jsonLine renders an event as one JSON object: the channel, the bus
// fields and the decoded message in protojson.
func jsonLine(channel string, bus *pmv1.BusEvent, msg *pmv1.WebSocketMessage) (string, error) {
	out := struct {
		Channel       string          `json:"channel"`
		Revision      int64           `json:"revision"`
		Origin        string          `json:"origin,omitempty"`
		RemovedUserID string          `json:"removedUserId,omitempty"`
		Message       json.RawMessage `json:"message,omitempty"`
	}{Channel: channel, Revision: bus.Revision, Origin: bus.Origin, RemovedUserID: bus.GetRemovedUserId()}
	if msg != nil {
		raw, err := protojson.Marshal(msg)
		if err != nil {
			return "", fmt.Errorf("encode JSON: %w", err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, raw); err != nil {
			return "", fmt.Errorf("encode JSON: %w", err)
		}
		out.Message = compact.Bytes()
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", fmt.Errorf("encode JSON: %w", err)
	}
	return string(b), nil
}

// humanLine renders an event as
//
//	15:04:05.000 rev 12 updated task 3f2a… "Write docs"  status: todo → in_progress
func (p printer) humanLine(channel string, bus *pmv1.BusEvent, msg *pmv1.WebSocketMessage, received time.Time) string {
	at := received
	if msg != nil && msg.Timestamp > 0 {
		at = time.UnixMilli(msg.Timestamp)
	}
	var b strings.Builder
	b.WriteString(at.Format("2006-01-02 15:04:05.000"))
	if p.allProjects {
		b.WriteString(" project " + channel[strings.LastIndexByte(channel, ':')+1:])
	}
	fmt.Fprintf(&b, " rev %d ", bus.Revision)
	if user := bus.GetRemovedUserId(); user != "" {
		b.WriteString("member removed user " + user)
		return b.String()
	}
	var (
		kind    string
		w       *pmv1.WorkItem
		changes []*pmv1.FieldChange
		id      string
	)
	switch pl := msg.GetPayload().(type) {
	case *pmv1.WebSocketMessage_WorkItemCreated:
		kind, w = "created", pl.WorkItemCreated.GetWorkItem()
	case *pmv1.WebSocketMessage_WorkItemUpdated:
		kind, w, changes = "updated", pl.WorkItemUpdated.GetWorkItem(), pl.WorkItemUpdated.GetChanges()
	case *pmv1.WebSocketMessage_WorkItemDeleted:
		kind, w, id = "deleted", pl.WorkItemDeleted.GetWorkItem(), pl.WorkItemDeleted.GetWorkItemId()
	default:
		fmt.Fprintf(&b, "unknown event %T", msg.GetPayload())
		return b.String()
	}
	if w != nil {
		id = w.Id
	}
	fmt.Fprintf(&b, "%s %s %s %s", kind, itemType(w.GetItemType()), id, strconv.Quote(w.GetTitle()))
	for i, c := range changes {
		if i == 0 {
			b.WriteString("  ")
		} else {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s: %s → %s", c.FieldName, changeValue(c.OldValue), changeValue(c.NewValue))
	}
	return b.String()
}

// itemType names an item type in lower case ("task").
func itemType(t pmv1.WorkItemType) string {
	return strings.ToLower(strings.TrimPrefix(t.String(), "WORK_ITEM_TYPE_"))
}

// changeValue shows a field value: ∅ for none, quoted when it has spaces or
// quotes, shortened when long.
func changeValue(v string) string {
	const maxRunes = 60
	if v == "" {
		return "∅"
	}
	if utf8.RuneCountInString(v) > maxRunes {
		v = string([]rune(v)[:maxRunes]) + "…"
	}
	if strings.ContainsAny(v, " \t\n\"\\") {
		return strconv.Quote(v)
	}
	return v
}
