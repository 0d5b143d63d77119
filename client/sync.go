package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// command is work for the sync goroutine besides messages.
type command int

const (
	cmdNone        command = iota
	cmdReconnected         // a new connection is up: re-subscribe, then resync every replica
	cmdLoad                // a new replica needs its first load
)

// inboxItem is one message or command for the sync goroutine.
type inboxItem struct {
	msg     *pmv1.WebSocketMessage
	push    bool // msg was pushed by the node (not an answer to this client)
	cmd     command
	project *Project // for cmdLoad
}

// inbox queues work for the sync goroutine without ever blocking the
// connection's reader. Messages beyond limit are dropped, and the drop is
// remembered so that every replica resyncs; commands are never dropped.
type inbox struct {
	mu       sync.Mutex
	items    []inboxItem
	msgs     int
	limit    int
	overflow bool
	wake     chan struct{} // capacity 1: there is work
}

func (q *inbox) init(limit int) {
	q.limit = limit
	q.wake = make(chan struct{}, 1)
}

func (q *inbox) add(it inboxItem) {
	q.mu.Lock()
	if it.msg != nil {
		if q.msgs >= q.limit {
			q.overflow = true
			q.mu.Unlock()
			q.signal()
			return
		}
		q.msgs++
	}
	q.items = append(q.items, it)
	q.mu.Unlock()
	q.signal()
}

func (q *inbox) push(m *pmv1.WebSocketMessage, push bool) { q.add(inboxItem{msg: m, push: push}) }

func (q *inbox) command(cmd command) { q.add(inboxItem{cmd: cmd}) }

func (q *inbox) load(p *Project) { q.add(inboxItem{cmd: cmdLoad, project: p}) }

func (q *inbox) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take returns the queued items and whether messages were dropped since the
// last take.
func (q *inbox) take() ([]inboxItem, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	items, overflow := q.items, q.overflow
	q.items, q.msgs, q.overflow = nil, 0, false
	return items, overflow
}

// syncLoop keeps the replicas up to date: it applies work item changes in
// revision order, re-subscribes after a reconnect, and fetches what a
// replica misses (first load, gap, resync push, reconnect, dropped events).
// Fetch failures that may pass are retried with backoff. When the client
// stops it ends every replica.
func (c *Client) syncLoop() {
	defer c.wg.Done()
	defer c.endProjects()
	var (
		resubscribe bool
		retry       <-chan time.Time
		failures    int
	)
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.inbox.wake:
		case <-retry:
			retry = nil
		}
		items, overflow := c.inbox.take()
		if overflow {
			c.log.Warn("pm: event buffer overflowed; resyncing every project")
			for _, p := range c.projectList() {
				p.needFetch = true
			}
		}
		for _, it := range items {
			switch it.cmd {
			case cmdReconnected:
				resubscribe = true
			case cmdLoad:
				it.project.needFetch = true
			default:
				c.handlePush(it.msg, it.push)
			}
		}
		if retry != nil {
			continue // wait for the retry before the next round trips
		}
		err := c.catchUp(&resubscribe)
		switch {
		case err == nil:
			failures = 0
		case c.ctx.Err() != nil:
			return
		default:
			d := c.opts.Reconnect.Delay(failures)
			failures++
			c.log.Warn("pm: resync failed; retrying", "in", d, "err", err)
			retry = time.After(d)
		}
	}
}

// handlePush applies one message to the replicas.
func (c *Client) handlePush(m *pmv1.WebSocketMessage, push bool) {
	switch p := m.Payload.(type) {
	case *pmv1.WebSocketMessage_ResyncRequired:
		for _, id := range p.ResyncRequired.ProjectIds {
			if r := c.Project(id); r != nil {
				r.needFetch = true
			}
		}
	case *pmv1.WebSocketMessage_SubscriptionRevoked:
		if r := c.Project(p.SubscriptionRevoked.ProjectId); r != nil {
			c.dropProject(r, fmt.Errorf("%w: %s", ErrSubscriptionRevoked, p.SubscriptionRevoked.Reason))
		}
	default:
		ev, ok := eventOf(m)
		if !ok {
			return
		}
		if r := c.Project(ev.project); r != nil {
			r.apply(ev)
		}
	}
	if push && c.opts.OnEvent != nil {
		c.opts.OnEvent(m)
	}
}

// catchUp re-subscribes if asked, then fetches every replica that needs it
// (a load, a resync, or a gap left after the queued events were applied).
func (c *Client) catchUp(resubscribe *bool) error {
	if *resubscribe {
		if err := c.resubscribe(); err != nil {
			return err
		}
		*resubscribe = false
	}
	for _, p := range c.projectList() {
		if !p.needFetch && !p.gap() {
			continue
		}
		if err := c.fetch(p); err != nil {
			return err
		}
	}
	return nil
}

// refused reports whether the node refuses a project for good: the user
// may not see it (any more), or it does not exist.
func refused(err error) bool {
	switch pm.ErrorCode(err) {
	case pm.EUnauthorized, pm.ENotFound, pm.EValidation:
		return true
	}
	return false
}

// resubscribe subscribes the new connection to every replicated project
// (one request; one per project if the node refuses some) and marks them
// for a resync.
func (c *Client) resubscribe() error {
	projects := c.projectList()
	if len(projects) == 0 {
		return nil
	}
	ids := make([]string, len(projects))
	for i, p := range projects {
		ids[i] = p.id
	}
	_, err := c.subscribe(c.ctx, ids)
	if err == nil {
		for _, p := range projects {
			p.needFetch = true
		}
		return nil
	}
	if !refused(err) {
		return fmt.Errorf("re-subscribe: %w", err)
	}
	for _, p := range projects {
		switch _, err := c.subscribe(c.ctx, []string{p.id}); {
		case err == nil:
			p.needFetch = true
		case refused(err):
			c.dropProject(p, err)
		default:
			return fmt.Errorf("re-subscribe %s: %w", p.id, err)
		}
	}
	return nil
}

// fetch asks for everything after the replica's revision (everything
// before its first load) and applies it.
func (c *Client) fetch(p *Project) error {
	since := p.since()
	list, err := c.GetWorkItems(c.ctx, &pmv1.GetWorkItemsRequest{ProjectId: p.id, SinceRevision: since})
	if err != nil {
		if refused(err) {
			c.dropProject(p, err)
			return nil
		}
		return fmt.Errorf("fetch project %s since %d: %w", p.id, since, err)
	}
	if !p.applyList(since, list) && p.Err() == nil {
		c.log.Warn("pm: resync answer older than the replica; ignored", "project", p.id, "as_of", list.AsOfRevision)
	}
	p.needFetch = false
	return nil
}

// Project returns the replica of a subscribed project, or nil.
func (c *Client) Project(id string) *Project {
	id = canonicalID(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.projects[id]
}

// projectList returns the replicas.
func (c *Client) projectList() []*Project {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Project, 0, len(c.projects))
	for _, p := range c.projects {
		out = append(out, p)
	}
	return out
}

// dropProject removes a replica and ends it with err.
func (c *Client) dropProject(p *Project, err error) {
	c.mu.Lock()
	if c.projects[p.id] == p {
		delete(c.projects, p.id)
	}
	c.mu.Unlock()
	p.end(err)
	c.log.Info("pm: replica ended", "project", p.id, "err", err)
}

// endProjects ends every replica when the client stops.
func (c *Client) endProjects() {
	err := context.Cause(c.ctx)
	if err == nil {
		err = errors.New("client: stopped")
	}
	c.mu.Lock()
	all := c.projects
	c.projects = make(map[string]*Project)
	c.mu.Unlock()
	for _, p := range all {
		p.end(err)
	}
}
