package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/pmhq/pm/client"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

const (
	dashboardFile = "grafana/pm-dashboard.json"
	alertsFile    = "prometheus/pm-alerts.yml"
)

// external are the metric names the dashboard and alerts may use that no
// node exports, with where they come from.
var external = map[string]string{
	"up":                    "Prometheus, per scrape target",
	"kube_pod_status_ready": "kube-state-metrics",
}

// addedLabels are labels Prometheus or the operator attach to every series
// of a target; a node's own output has none of them.
var addedLabels = map[string]bool{"__name__": true, "job": true, "instance": true, "namespace": true, "pod": true}

// exported holds the series names and their label names on a node's
// /metrics.
type exported map[string]map[string]bool

// sampleLine is one sample of the text exposition format.
var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s`)

var labelName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)

func parseExposition(body string) exported {
	out := exported{}
	for line := range strings.Lines(body) {
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if out[m[1]] == nil {
			out[m[1]] = map[string]bool{}
		}
		for _, l := range labelName.FindAllStringSubmatch(m[2], -1) {
			out[m[1]][l[1]] = true
		}
	}
	return out
}

// scrapeAfterTraffic starts the image's binary on a fresh database and
// Redis, drives every kind of traffic the dashboard shows (upgrades,
// creates, updates, loads, subscriptions and their deliveries), and returns
// what its /metrics exports then.
func scrapeAfterTraffic(t *testing.T) exported {
	t.Helper()
	env := testEnv(t)
	env["PM_LISTEN_ADDR"] = "127.0.0.1:0"
	env["PM_ADMIN_ADDR"] = "127.0.0.1:0"
	p := startProcess(t, nodeBinary(t), env, nil)
	listen, admin := p.waitServing(t)

	url := "ws://" + listen + "/ws"
	writer := dial(t, url, env["PM_JWT_SECRET"])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	project, err := writer.CreateWorkItem(ctx, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "Dashboard"})
	if err != nil {
		t.Fatalf("create a project: %v", err)
	}
	sub, err := writer.Subscribe(ctx, project.Id)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	task, err := writer.CreateWorkItem(ctx, &pmv1.CreateWorkItemRequest{ProjectId: project.Id, ParentId: project.Id, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "Scrape"})
	if err != nil {
		t.Fatalf("create a task: %v", err)
	}
	title := "Scraped"
	if _, err := writer.UpdateWorkItem(ctx, &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: task.Version, Title: &title}); err != nil {
		t.Fatalf("update the task: %v", err)
	}
	if _, err := writer.GetWorkItems(ctx, &pmv1.GetWorkItemsRequest{ProjectId: project.Id}); err != nil {
		t.Fatalf("load the project: %v", err)
	}
	// The events came back through Redis to the subscription.
	if err := sub[0].WaitFor(ctx, func(p *client.Project) bool {
		w := p.Get(task.Id)
		return w != nil && w.Title == title
	}); err != nil {
		t.Fatalf("the subscription never saw the update: %v", err)
	}

	var body string
	if err := poll(startWait, func() bool {
		status, b, err := httpGet("http://" + admin + "/metrics")
		body = b
		return err == nil && status == http.StatusOK && strings.Contains(b, "pm_pubsub_deliveries_total ")
	}); err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	return parseExposition(body)
}

// selectors returns the vector selectors of a PromQL expression (Grafana
// variables replaced by values of their kind first).
func selectors(t *testing.T, where, expr string) []*parser.VectorSelector {
	t.Helper()
	expr = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h").Replace(expr)
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, expr, err)
		return nil
	}
	var out []*parser.VectorSelector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out
}

// checkSelectors fails for every metric an expression reads that the node
// does not export (nor an external source), and for every label it matches
// on that the metric does not carry.
func checkSelectors(t *testing.T, where, expr string, got exported, used map[string]bool) {
	t.Helper()
	for _, vs := range selectors(t, where, expr) {
		name := vs.Name
		used[name] = true
		if _, ok := external[name]; ok {
			continue
		}
		labels, ok := got[name]
		if !ok {
			t.Errorf("%s: %q reads %s, which the node does not export", where, expr, name)
			continue
		}
		for _, m := range vs.LabelMatchers {
			if !addedLabels[m.Name] && !labels[m.Name] {
				t.Errorf("%s: %q matches on label %s, which %s does not carry", where, expr, m.Name, name)
			}
		}
	}
}

// dashboardExprs returns every PromQL expression of the dashboard's panels
// (rows and nested panels included), by panel title.
func dashboardExprs(t *testing.T) (exprs map[string][]string, variables []string) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID       string            `json:"uid"`
		Panels    []json.RawMessage `json:"panels"`
		Templates struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("%s: no uid or no panels", dashboardFile)
	}
	type panel struct {
		ID      int               `json:"id"`
		Type    string            `json:"type"`
		Title   string            `json:"title"`
		Panels  []json.RawMessage `json:"panels"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	}
	exprs = map[string][]string{}
	ids := map[int]bool{}
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("%s: a panel: %v", dashboardFile, err)
			}
			if ids[p.ID] {
				t.Errorf("%s: panel id %d used twice", dashboardFile, p.ID)
			}
			ids[p.ID] = true
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", dashboardFile, p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q has an empty query", dashboardFile, p.Title)
				}
				exprs[p.Title] = append(exprs[p.Title], tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	labelValues := regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,`)
	for _, v := range dash.Templates.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(string(v.Query))
		if m == nil {
			t.Errorf("%s: variable %s: query %s is not label_values(metric, label)", dashboardFile, v.Name, v.Query)
			continue
		}
		variables = append(variables, m[1])
	}
	return exprs, variables
}

// Every metric the dashboard and the alert rules read is one a running node
// exports after traffic (or one of the external few), with the labels they
// match on; the dashboard shows what an operator needs; the alert file is
// valid Prometheus rules, and the PrometheusRule of the Kubernetes base holds
// the same rules.
func TestDashboardAndAlertsMatchTheNode(t *testing.T) {
	got := scrapeAfterTraffic(t)
	used := map[string]bool{}

	exprs, variables := dashboardExprs(t)
	for _, title := range sortedKeys(exprs) {
		for _, e := range exprs[title] {
			checkSelectors(t, "dashboard panel "+title, e, got, used)
		}
	}
	for _, name := range variables {
		if _, ok := got[name]; !ok {
			t.Errorf("dashboard variable reads %s, which the node does not export", name)
		}
	}
	for _, want := range []string{
		"pm_connections", "pm_upgrades_total", "pm_requests_total", "pm_request_duration_seconds_bucket",
		"pm_pubsub_deliveries_total", "pm_event_publish_errors_total", "pm_slow_consumer_disconnects_total",
		"pm_rate_limit_disconnects_total", "pm_idempotency_replayed_total", "pm_pubsub_reconnects_total",
		"pm_pubsub_resync_notices_total", "process_resident_memory_bytes", "go_memstats_heap_inuse_bytes",
		"pm_event_delivery_age_seconds_bucket", "pm_pubsub_publish_duration_seconds_bucket", "pm_tenant_rate_limited_total",
		"pm_limit_fail_open_total", "pm_quota_connections", "pm_db_breaker_state", "pm_db_pool_acquired_conns",
	} {
		if !used[want] {
			t.Errorf("the dashboard shows no %s", want)
		}
	}

	rules, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("%s: %v", alertsFile, err)
	}
	if rules == nil {
		t.FailNow()
	}
	alerting := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerting[r.Alert] = true
			checkSelectors(t, "alert "+r.Alert, r.Expr, got, alerting)
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %s has no severity label or no summary", r.Alert)
			}
		}
	}
	for _, want := range []string{"up", "kube_pod_status_ready", "pm_slow_consumer_disconnects_total", "pm_event_publish_errors_total", "pm_pubsub_resync_notices_total", "pm_request_duration_seconds_bucket",
		"pm_db_breaker_state", "pm_limit_fail_open_total", "pm_upgrades_total", "pm_event_delivery_age_seconds_bucket"} {
		if !alerting[want] {
			t.Errorf("no alert reads %s", want)
		}
	}

	// The PrometheusRule of the base: the same groups and rules.
	r := render(t, "kubernetes/base")
	prs := each[*monitoringv1.PrometheusRule](r)
	if len(prs) != 1 {
		t.Fatalf("%d PrometheusRules in the base, want 1", len(prs))
	}
	if plain, op := ruleSummary(rules), operatorRuleSummary(prs[0]); !slices.Equal(plain, op) {
		var onlyPlain, onlyOp []string
		for _, l := range plain {
			if !slices.Contains(op, l) {
				onlyPlain = append(onlyPlain, l)
			}
		}
		for _, l := range op {
			if !slices.Contains(plain, l) {
				onlyOp = append(onlyOp, l)
			}
		}
		t.Errorf("the PrometheusRule differs from %s (or orders its rules otherwise):\nonly in %s:\n%s\nonly in the PrometheusRule:\n%s",
			alertsFile, alertsFile, strings.Join(onlyPlain, "\n"), strings.Join(onlyOp, "\n"))
	}
}

// ruleSummary renders each rule as one comparable line.
func ruleSummary(rgs *rulefmt.RuleGroups) []string {
	var out []string
	for _, g := range rgs.Groups {
		for _, r := range g.Rules {
			out = append(out, fmt.Sprintf("%s|%s|%s|%s|%v|%v", g.Name, r.Alert, r.Expr, r.For, r.Labels, r.Annotations))
		}
	}
	return out
}

func operatorRuleSummary(pr *monitoringv1.PrometheusRule) []string {
	var out []string
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			var forDur string
			if r.For != nil {
				forDur = string(*r.For)
			}
			out = append(out, fmt.Sprintf("%s|%s|%s|%s|%v|%v", g.Name, r.Alert, r.Expr.String(), forDur, r.Labels, r.Annotations))
		}
	}
	return out
}
