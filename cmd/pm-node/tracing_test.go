package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// otlpReceiver is an OTLP/HTTP trace receiver: it decodes every export
// request and keeps the spans with the service.instance.id of the node that
// sent them.
type otlpReceiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	requests int
	spans    []receivedSpan
}

type receivedSpan struct {
	node string
	span *tracev1.Span
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests++
		r.mu.Unlock()
		if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("OTLP receiver: %s %s (%s), want POST /v1/traces of application/x-protobuf", req.Method, req.URL.Path, req.Header.Get("Content-Type"))
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		data, err := io.ReadAll(body)
		var export collectortrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(data, &export)
		}
		if err != nil {
			t.Errorf("OTLP receiver: undecodable export: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range export.ResourceSpans {
			instance := ""
			for _, a := range rs.GetResource().GetAttributes() {
				if a.Key == "service.instance.id" {
					instance = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					r.spans = append(r.spans, receivedSpan{node: instance, span: s})
				}
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// trace returns the spans received of one trace.
func (r *otlpReceiver) trace(traceID string) []receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []receivedSpan
	for _, s := range r.spans {
		if hex.EncodeToString(s.span.TraceId) == traceID {
			out = append(out, s)
		}
	}
	return out
}

func (r *otlpReceiver) requestCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the JSON log lines written so far.
func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

func signToken(t *testing.T, tenant string, user uuid.UUID) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user.String(), "tenant_id": tenant, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// scrape reads a node's /metrics into a map from series (name and labels, as
// written) to value.
func scrape(t *testing.T, admin net.Addr) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// scrapeUntil scrapes a node's metrics until cond holds of them, for at
// most 10 s, and returns them.
func scrapeUntil(t *testing.T, admin net.Addr, cond func(map[string]float64) bool) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := scrape(t, admin)
		if cond(m) || time.Now().After(deadline) {
			return m
		}
		time.Sleep(20 * time.Millisecond) // polling /metrics: nothing to wait on
	}
}

// A write sent to node A with a client's traceparent is one trace across
// both nodes: the request span on A is the client span's child, the
// database transaction and the publish are the request's children, and
// each node's fan-out of the event is one span, the publish span's child.
// A's log lines of the request carry the trace and request span ids. The
// new metrics show the traffic on both nodes, and a replayed duplicate is
// counted once.
func TestTracingAcrossNodes(t *testing.T) {
	recv := newOTLPReceiver(t)
	env := baseEnv(t)
	env["PM_LOG_FORMAT"] = "json"
	env["OTEL_EXPORTER_OTLP_ENDPOINT"] = recv.srv.URL
	envA, envB := map[string]string{}, map[string]string{}
	for k, v := range env {
		envA[k], envB[k] = v, v
	}
	envA["PM_NODE_ID"], envB["PM_NODE_ID"] = "node-a", "node-b"
	logsA := new(syncBuffer)
	clientA, adminA, stopA := startRunLogging(t, envA, logsA)
	clientB, adminB, stopB := startRunLogging(t, envB, io.Discard)

	tenant, user := "t-trace", uuid.New()
	token := signToken(t, tenant, user)
	writer := nodetest.Dial(t, "ws://"+clientA.String()+"/ws", token)
	onA := nodetest.Dial(t, "ws://"+clientA.String()+"/ws", token)
	onB := nodetest.Dial(t, "ws://"+clientB.String()+"/ws", token)

	resp, _ := writer.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{
		CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "traced"},
	}})
	project := resp.GetWorkItemCreated().GetWorkItem().GetId()
	if project == "" {
		t.Fatalf("create project: %v", resp)
	}
	// The project's event is published after its answer: subscribe only
	// once it is out, so that only the epic's event reaches the subscribers.
	scrapeUntil(t, adminA, func(m map[string]float64) bool { return m["pm_pubsub_publish_duration_seconds_count"] >= 1 })
	for _, c := range []*nodetest.Conn{onA, onB} {
		ack, _ := c.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_Subscribe{Subscribe: &pmv1.Subscribe{ProjectIds: []string{project}}}})
		if ack.GetSubscribeAck() == nil {
			t.Fatalf("subscribe: %v", ack)
		}
	}

	const traceID, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	write := &pmv1.WebSocketMessage{
		MessageId:   uuid.NewString(),
		Traceparent: "00-" + traceID + "-" + clientSpan + "-01",
		Tracestate:  "vendor=value",
		Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{
			ProjectId: project, ParentId: project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_EPIC, Title: "epic",
		}},
	}
	resp, _ = writer.Request(write)
	if resp.GetWorkItemCreated() == nil {
		t.Fatalf("create epic: %v", resp)
	}
	for name, c := range map[string]*nodetest.Conn{"A": onA, "B": onB} {
		if ev := c.Next(10 * time.Second); ev.GetWorkItemCreated().GetWorkItem().GetTitle() != "epic" {
			t.Fatalf("subscriber on %s got %v, want the epic's WorkItemCreated", name, ev)
		}
	}
	// The same request again, untraced: replayed, not run.
	again := proto.Clone(write).(*pmv1.WebSocketMessage)
	again.Traceparent, again.Tracestate = "", ""
	if resp, _ := writer.Request(again); resp.GetWorkItemCreated() == nil {
		t.Fatalf("replay: %v", resp)
	}

	// Metrics, before the nodes stop. A node counts a request and observes
	// an event's age just after handing its frames on, so wait for them.
	ma := scrapeUntil(t, adminA, func(m map[string]float64) bool {
		return m["pm_event_delivery_age_seconds_count"] >= 1 && m[`pm_requests_total{op="create_work_item",outcome="replayed"}`] >= 1
	})
	mb := scrapeUntil(t, adminB, func(m map[string]float64) bool { return m["pm_event_delivery_age_seconds_count"] >= 1 })
	if n := ma["pm_event_publish_errors_total"]; n != 0 {
		// A publish that timed out is delivered on A and may come back
		// through Redis too: the counts below would not hold.
		t.Fatalf("A: %v publishes failed (a loaded machine?)", n)
	}
	for _, c := range []struct {
		name string
		m    map[string]float64
		want float64
	}{
		{"A: pm_event_delivery_age_seconds_count", ma, 1},      // the epic, to onA (the project was created before anyone subscribed)
		{"B: pm_event_delivery_age_seconds_count", mb, 1},      // the epic, to onB
		{"A: pm_pubsub_publish_duration_seconds_count", ma, 2}, // the project and the epic
		{"B: pm_pubsub_publish_duration_seconds_count", mb, 0},
		{"A: pm_idempotency_replayed_total", ma, 1},
		{`A: pm_requests_total{op="create_work_item",outcome="replayed"}`, ma, 1},
	} {
		series := c.name[3:]
		if got, ok := c.m[series]; !ok || got != c.want {
			t.Errorf("%s = %v (present: %v), want %v", c.name, got, ok, c.want)
		}
	}
	for _, c := range []struct {
		name string
		m    map[string]float64
	}{
		{"A: pm_event_delivery_age_seconds_sum", ma},
		{"B: pm_event_delivery_age_seconds_sum", mb},
		{"A: pm_pubsub_publish_duration_seconds_sum", ma},
	} {
		if got := c.m[c.name[3:]]; !(got > 0) {
			t.Errorf("%s = %v, want > 0", c.name, got)
		}
	}
	if got := ma[`pm_event_delivery_age_seconds_bucket{le="+Inf"}`]; got != 1 {
		t.Errorf(`A: pm_event_delivery_age_seconds_bucket{le="+Inf"} = %v, want 1`, got)
	}

	// Stopping flushes the spans.
	writer.Close()
	onA.Close()
	onB.Close()
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	if err := stopB(); err != nil {
		t.Fatal(err)
	}

	spans := recv.trace(traceID)
	find := func(node, name string) []*tracev1.Span {
		var out []*tracev1.Span
		for _, s := range spans {
			if s.node == node && s.span.Name == name {
				out = append(out, s.span)
			}
		}
		return out
	}
	one := func(node, name string) *tracev1.Span {
		t.Helper()
		got := find(node, name)
		if len(got) != 1 {
			var all []string
			for _, s := range spans {
				all = append(all, s.node+":"+s.span.Name)
			}
			t.Fatalf("%d %q spans from %s in the trace, want 1 (trace: %v)", len(got), name, node, all)
		}
		return got[0]
	}
	id := func(b []byte) string { return hex.EncodeToString(b) }
	req := one("node-a", "CreateWorkItemRequest")
	db := one("node-a", "db CreateWorkItem")
	pub := one("node-a", "publish")
	fanA := one("node-a", "fanout")
	fanB := one("node-b", "fanout")
	for _, c := range []struct {
		what   string
		span   *tracev1.Span
		parent string
		kind   tracev1.Span_SpanKind
	}{
		{"request", req, clientSpan, tracev1.Span_SPAN_KIND_SERVER},
		{"db transaction", db, id(req.SpanId), tracev1.Span_SPAN_KIND_CLIENT},
		{"publish", pub, id(req.SpanId), tracev1.Span_SPAN_KIND_PRODUCER},
		{"fan-out on A", fanA, id(pub.SpanId), tracev1.Span_SPAN_KIND_CONSUMER},
		{"fan-out on B", fanB, id(pub.SpanId), tracev1.Span_SPAN_KIND_CONSUMER},
	} {
		if got := id(c.span.ParentSpanId); got != c.parent {
			t.Errorf("%s span's parent is %s, want %s", c.what, got, c.parent)
		}
		if c.span.Kind != c.kind {
			t.Errorf("%s span's kind is %v, want %v", c.what, c.span.Kind, c.kind)
		}
	}
	if req.TraceState != "vendor=value" {
		t.Errorf("request span's tracestate %q, want the client's", req.TraceState)
	}
	attrs := func(s *tracev1.Span) map[string]string {
		m := map[string]string{}
		for _, a := range s.Attributes {
			if _, ok := a.Value.Value.(*commonv1.AnyValue_IntValue); ok {
				m[a.Key] = strconv.FormatInt(a.Value.GetIntValue(), 10)
			} else {
				m[a.Key] = a.Value.GetStringValue()
			}
		}
		return m
	}
	ra := attrs(req)
	for k, want := range map[string]string{"pm.tenant": tenant, "pm.project_id": project, "pm.message_id": write.MessageId, "pm.outcome": "ok"} {
		if ra[k] != want {
			t.Errorf("request span attribute %s = %q, want %q", k, ra[k], want)
		}
	}
	for name, s := range map[string]*tracev1.Span{"A": fanA, "B": fanB} {
		if a := attrs(s); a["pm.project_id"] != project || a["pm.tenant"] != tenant || a["pm.revision"] != "2" || a["pm.subscribers"] != "1" {
			t.Errorf("fan-out span on %s: attributes %v", name, a)
		}
	}
	if n := len(spans); n != 5 {
		t.Errorf("%d spans in the trace, want 5 (request, db, publish, two fan-outs)", n)
	}

	// A's log lines of the traced request carry its ids; the untraced
	// replay's do not carry them.
	var traced, replay int
	for _, l := range logsA.lines(t) {
		if l["message_id"] != write.MessageId {
			continue
		}
		switch l["outcome"] {
		case "ok":
			traced++
			if l["trace_id"] != traceID || l["span_id"] != id(req.SpanId) {
				t.Errorf("log line of the traced request: trace_id %v span_id %v, want %s %s", l["trace_id"], l["span_id"], traceID, id(req.SpanId))
			}
		case "replayed":
			replay++
			if l["trace_id"] == traceID {
				t.Errorf("log line of the untraced replay carries the first request's trace: %v", l)
			}
		}
	}
	if traced != 1 || replay != 1 {
		t.Errorf("%d log lines of the traced request and %d of the replay, want 1 and 1", traced, replay)
	}
}

// Without OTEL_EXPORTER_OTLP_ENDPOINT the node exports nothing and never
// contacts a receiver, even for requests that carry a client's trace
// context, which still travels with their events.
func TestTracingOffWithoutEndpoint(t *testing.T) {
	recv := newOTLPReceiver(t)
	env := baseEnv(t)
	env["PM_LOG_FORMAT"] = "json"
	env["OTEL_SERVICE_NAME"] = "pm-node" // other OTEL_* settings alone do not turn tracing on
	env["OTEL_TRACES_SAMPLER"] = "always_on"
	logs := new(syncBuffer)
	client, _, stop := startRunLogging(t, env, logs)
	token := signToken(t, "t-off", uuid.New())
	c := nodetest.Dial(t, "ws://"+client.String()+"/ws", token)
	resp, _ := c.Request(&pmv1.WebSocketMessage{
		Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{
			CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "untraced"},
		},
	})
	if resp.GetWorkItemCreated() == nil {
		t.Fatalf("create: %v", resp)
	}
	c.Close()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := recv.requestCount(); n != 0 {
		t.Fatalf("the receiver got %d requests from a node without an endpoint", n)
	}
	for _, l := range logs.lines(t) {
		if msg, _ := l["msg"].(string); strings.HasPrefix(msg, "tracing:") {
			t.Errorf("tracing set up without an endpoint: %v", l)
		}
	}
}

// A node refuses to start with a tracing setting it cannot honour, naming it.
func TestTracingRefusesBadSettings(t *testing.T) {
	for name, c := range map[string]struct{ key, value string }{
		"grpc protocol":   {"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"},
		"unknown sampler": {"OTEL_TRACES_SAMPLER", "sometimes"},
		"ratio above 1":   {"OTEL_TRACES_SAMPLER_ARG", "2"},
	} {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{
				"PM_DATABASE_URL":             "postgres://pm_app@127.0.0.1:1/unreachable", // never reached: tracing is set up first
				"PM_REDIS_URL":                nodetest.RedisURL(),
				"PM_JWT_SECRET":               "secret",
				"PM_LISTEN_ADDR":              "127.0.0.1:0",
				"PM_ADMIN_ADDR":               "127.0.0.1:0",
				"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
				"OTEL_TRACES_SAMPLER":         "traceidratio",
				c.key:                         c.value,
			}
			err := run(t.Context(), nil, envOf(env), io.Discard, func(net.Addr, net.Addr) { t.Error("served") })
			if err == nil || !strings.Contains(err.Error(), c.key) {
				t.Fatalf("run: %v, want an error naming %s", err, c.key)
			}
		})
	}
}
