// Command pm-loadgen puts a measured load on a pm cluster running on this
// machine and reports what it saw: how long each change took to reach every
// subscriber, how long writers waited for their answers, and whether any
// subscriber missed a revision.
//
// It only talks to loopback: every -url must name localhost, an address in
// 127.0.0.0/8 or ::1, and anything else is refused before a connection is
// made. It is a tool for measuring a development cluster (make run), not for
// loading somebody else's servers.
//
// It seeds its own data through the nodes: a fresh tenant loadgen-xxxxxxxx,
// an admin user who creates -projects projects, one user per subscriber
// connection (a viewer of one project, round-robin) and one per writer (an
// editor of every project) who owns one work item in each project, so that
// writers never conflict. Tokens are minted with the cluster's HS256 secret
// (-secret or PM_JWT_SECRET).
//
// Writers then change their items, at a fixed total rate (-rate, open loop:
// a request's latency counts from when the schedule said to send it, so a
// slow server is not hidden by a generator that waits) or with a fixed
// number of requests in flight (-inflight, closed loop). Each write carries
// its send time and writer in the item's description; every subscriber
// reads it back from the event it receives and records the delivery
// latency. After -warmup (not measured) and -duration, the writers stop,
// the subscribers get -drain to catch up, and each subscriber's replica is
// checked against the project's head: a revision that reached it neither as
// an event nor through the SDK's resync is a loss.
//
// A progress line goes to stderr every second, the report to stdout as a
// table, and with -json to a file as JSON. Every flag has an environment
// variable PM_LOADGEN_<FLAG> (pm-loadgen -h lists them); the secret also
// falls back to PM_JWT_SECRET.
//
// With -writers 0 it only opens and subscribes the subscriber connections
// and holds them idle for -hold (-ready-file tells a script when they are
// all subscribed), to measure the servers' memory per connection; the report
// gives, for every run, how long opening and subscribing them all took.
//
// With -target centrifugo it loads a Centrifugo cluster the same way, for a
// side-by-side comparison (scripts/compare-centrifugo.sh): see centrifugo.go.
//
// Against make run's cluster:
//
//	PM_JWT_SECRET=$(cat .run/jwt-secret) bin/pm-loadgen -url ws://127.0.0.1:8080/ws -conns 200 -writers 4 -rate 200
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// maxDuration bounds -duration, -warmup and -drain: a load run is a
// measurement, not a soak.
const maxDuration = time.Hour

// The targets pm-loadgen can load.
const (
	targetPM         = "pm"
	targetCentrifugo = "centrifugo"
)

// config is a load run's settings.
type config struct {
	target     string // targetPM or targetCentrifugo
	urls       []string
	secret     string
	conns      int
	projects   int
	writers    int
	rate       float64 // writes/s in total; 0 with inflight
	inflight   int     // requests in flight in total; 0 with rate
	duration   time.Duration
	warmup     time.Duration
	drain      time.Duration
	hold       time.Duration // subscribed connections held idle before the load
	slow       int           // subscribers that take slowDelay over every event
	slowDelay  time.Duration
	mix        mix
	jsonFile   string
	ready      string // file written once every subscriber is subscribed
	seeded     string // file written once seeding is done; connecting waits until it is removed
	cpuProfile string // pm-loadgen's own CPU profile, for the share of the machine it takes
	progress   bool   // print the progress line every second

	namespace string // Centrifugo: the channels' namespace
}

// mix is the share of each kind of write, in parts (not necessarily of 100).
type mix struct {
	Update int `json:"update"`
	Create int `json:"create"`
	Move   int `json:"move"`
}

func (m mix) String() string {
	return fmt.Sprintf("update=%d,create=%d,move=%d", m.Update, m.Create, m.Move)
}

// parseMix reads "update=90,create=5,move=5"; kinds left out get 0.
func parseMix(s string) (mix, error) {
	var m mix
	for part := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 0 {
			return mix{}, fmt.Errorf("mix %q: want kind=share,… with kinds update, create, move", s)
		}
		switch k {
		case "update":
			m.Update = n
		case "create":
			m.Create = n
		case "move":
			m.Move = n
		default:
			return mix{}, fmt.Errorf("mix %q: unknown kind %q (update, create, move)", s, k)
		}
	}
	if m.Update+m.Create+m.Move == 0 {
		return mix{}, fmt.Errorf("mix %q: every share is 0", s)
	}
	return m, nil
}

// errUsage marks a usage error already explained on stderr.
var errUsage = errors.New("usage")

// run runs pm-loadgen and returns its exit status: 0 ok (losses included:
// they are in the report), 1 failure, 2 usage.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, getenv, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "pm-loadgen: %v\n", err)
		return 2
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "pm-loadgen: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "pm-loadgen: cpu profile: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := loadRun(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "pm-loadgen: %v\n", err)
		return 1
	}
	rep.writeTable(stdout)
	if cfg.jsonFile != "" {
		if err := rep.writeJSONFile(cfg.jsonFile); err != nil {
			fmt.Fprintf(stderr, "pm-loadgen: %v\n", err)
			return 1
		}
	}
	return 0
}

// parseFlags reads the flags, each defaulting to its PM_LOADGEN_* variable.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("pm-loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var envErrs []error
	// envName is a flag's variable: -ready-file is PM_LOADGEN_READY_FILE.
	envName := func(name string) string { return "PM_LOADGEN_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) }
	envOr := func(name, def string) string {
		if v := getenv(envName(name)); v != "" {
			return v
		}
		return def
	}
	note := func(name string) string { return " (" + envName(name) + ")" }
	str := func(name, def, usage string) *string { return fs.String(name, envOr(name, def), usage+note(name)) }
	num := func(name string, def int, usage string) *int {
		v, err := strconv.Atoi(envOr(name, strconv.Itoa(def)))
		if err != nil {
			envErrs = append(envErrs, fmt.Errorf("%s: %w", envName(name), err))
		}
		return fs.Int(name, v, usage+note(name))
	}
	dur := func(name string, def time.Duration, usage string) *time.Duration {
		v, err := time.ParseDuration(envOr(name, def.String()))
		if err != nil {
			envErrs = append(envErrs, fmt.Errorf("%s: %w", envName(name), err))
		}
		return fs.Duration(name, v, usage+note(name))
	}
	target := str("target", targetPM, "what to load: pm, or centrifugo (a Centrifugo cluster, same load, for comparison)")
	urls := str("url", "", "node or load balancer WebSocket URLs, comma-separated, loopback only; connections go round-robin (default ws://127.0.0.1:8080/ws, centrifugo ws://127.0.0.1:8000/connection/websocket)")
	secret := fs.String("secret", "", "HS256 secret of the cluster's tokens"+note("secret")+", else (pm only) PM_JWT_SECRET")
	conns := num("conns", 100, "subscriber connections")
	projects := num("projects", 1, "projects (centrifugo: channels); subscriber i follows project i mod projects")
	writers := num("writers", 2, "writer connections; each owns one work item per project (centrifugo: publishes to every channel); 0: idle, connect and subscribe only")
	rate := str("rate", "", "total writes per second, open loop (default 100 unless -inflight)")
	inflight := num("inflight", 0, "closed loop: this many write requests in flight in total (at most writers×projects)")
	duration := dur("duration", 10*time.Second, "how long to measure")
	warmup := dur("warmup", 2*time.Second, "load before measuring, not counted")
	drain := dur("drain", 5*time.Second, "after the writers stop, how long subscribers may take to catch up")
	slow := num("slow", 0, "pm: this many subscribers take -slow-delay over every event, as a client that cannot keep up (with an event buffer of 64, their SDK soon drops what it cannot queue and resyncs)")
	slowDelay := dur("slow-delay", 20*time.Millisecond, "what a -slow subscriber spends on each event")
	hold := dur("hold", 0, "once every subscriber is subscribed, hold the connections idle this long before the load (with -writers 0: before closing)")
	ready := str("ready-file", "", "write this file once every subscriber is subscribed (before -hold)")
	cpuProfile := str("cpuprofile", "", "write pm-loadgen's own CPU profile to this file (go tool pprof)")
	seeded := str("seeded-file", "", "write this file once the tenant is seeded and wait until it is removed before connecting the subscribers (a script measures the nodes in between)")
	namespace := str("namespace", "loadgen", "centrifugo: the channels' namespace, which must allow subscribe and publish for clients (empty: channels without namespace)")
	mixFlag := str("mix", "update=100", "shares of write kinds: update (versioned title+description change), create (new task), move (status change)")
	jsonFile := str("json", "", "also write the report as JSON to this file")
	quiet := fs.Bool("quiet", envOr("quiet", "") == "true", "no progress line"+note("quiet"))
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: pm-loadgen [-target pm|centrifugo] [-url ws://127.0.0.1:8080/ws] [-secret S] [-conns N] [-projects P] [-writers W] [-rate R | -inflight C] [-duration D] [-mix update=90,create=5,move=5] [-hold D] [-json FILE]\n\n"+
			"Loads a pm cluster (or, with -target centrifugo, a Centrifugo cluster) on this machine (loopback addresses only) and reports\n"+
			"delivery and request latency, rates, losses and how long connecting took. -writers 0 -hold D: connect, subscribe, hold idle.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config{}, err
		}
		return config{}, errUsage
	}
	fail := func(format string, a ...any) (config, error) {
		fmt.Fprintf(stderr, "pm-loadgen: %s\n", fmt.Sprintf(format, a...))
		fs.Usage()
		return config{}, errUsage
	}
	if fs.NArg() > 0 {
		return fail("unexpected arguments: %v", fs.Args())
	}
	if len(envErrs) > 0 {
		return fail("%v", errors.Join(envErrs...))
	}
	cfg := config{
		target: *target, secret: *secret, conns: *conns, projects: *projects, writers: *writers, inflight: *inflight,
		duration: *duration, warmup: *warmup, drain: *drain, hold: *hold, slow: *slow, slowDelay: *slowDelay, jsonFile: *jsonFile, ready: *ready, seeded: *seeded, cpuProfile: *cpuProfile,
		progress: !*quiet, namespace: *namespace,
	}
	if cfg.target != targetPM && cfg.target != targetCentrifugo {
		return fail("-target %q: want pm or centrifugo", cfg.target)
	}
	if cfg.secret == "" {
		cfg.secret = getenv("PM_LOADGEN_SECRET")
	}
	if cfg.secret == "" && cfg.target == targetPM {
		cfg.secret = getenv("PM_JWT_SECRET")
	}
	urlSet := false
	fs.Visit(func(f *flag.Flag) { urlSet = urlSet || f.Name == "url" })
	if *urls == "" && !urlSet {
		*urls = "ws://127.0.0.1:8080/ws"
		if cfg.target == targetCentrifugo {
			*urls = "ws://127.0.0.1:8000/connection/websocket"
		}
	}
	for u := range strings.SplitSeq(*urls, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.urls = append(cfg.urls, u)
		}
	}
	if len(cfg.urls) == 0 {
		return fail("-url is required")
	}
	for _, u := range cfg.urls {
		if err := checkLoopback(u); err != nil {
			return fail("%v", err)
		}
	}
	if cfg.secret == "" {
		return fail("-secret (or, for pm, PM_JWT_SECRET) is required: pm-loadgen mints its users' tokens")
	}
	switch {
	case cfg.writers == 0 && (*rate != "" || cfg.inflight != 0):
		return fail("-writers 0 (idle) takes neither -rate nor -inflight")
	case cfg.writers == 0:
	case *rate != "" && cfg.inflight > 0:
		return fail("-rate and -inflight exclude each other")
	case *rate != "":
		r, err := strconv.ParseFloat(*rate, 64)
		if err != nil || r <= 0 || r > 1e6 {
			return fail("-rate %q: want writes per second, more than 0 and at most 1e6", *rate)
		}
		cfg.rate = r
	case cfg.inflight == 0:
		cfg.rate = 100
	}
	if cfg.inflight < 0 {
		return fail("-inflight %d is negative", cfg.inflight)
	}
	if cfg.conns < 1 || cfg.projects < 1 || cfg.writers < 0 {
		return fail("-conns and -projects must be at least 1, -writers at least 0")
	}
	if cfg.slow < 0 || cfg.slow > cfg.conns || cfg.slowDelay < 0 {
		return fail("-slow must be between 0 and -conns, -slow-delay not negative")
	}
	if cfg.slow > 0 && cfg.target != targetPM {
		return fail("-slow needs -target pm")
	}
	if cfg.inflight > cfg.writers*cfg.projects {
		return fail("-inflight %d: at most writers×projects = %d (one request per owned item at a time)", cfg.inflight, cfg.writers*cfg.projects)
	}
	for name, d := range map[string]time.Duration{"duration": cfg.duration, "warmup": cfg.warmup, "drain": cfg.drain, "hold": cfg.hold} {
		if d < 0 || d > maxDuration || name == "duration" && d == 0 {
			return fail("-%s %v: want more than 0 (warmup, drain, hold: 0 or more) and at most %v", name, d, maxDuration)
		}
	}
	if cfg.target == targetCentrifugo && strings.ContainsAny(cfg.namespace, ":$#/ ") {
		return fail("-namespace %q: a Centrifugo namespace name, without ':' and such", cfg.namespace)
	}
	m, err := parseMix(*mixFlag)
	if err != nil {
		return fail("%v", err)
	}
	cfg.mix = m
	return cfg, nil
}

// checkLoopback refuses a URL whose host is not this machine's loopback:
// localhost, 127.0.0.0/8 or ::1. Names other than localhost are refused
// without being resolved.
func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("-url %q: %v", raw, err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return fmt.Errorf("-url %q: want ws:// or wss://", raw)
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("-url %q: pm-loadgen only loads this machine (localhost, 127.0.0.0/8, ::1), not %q", raw, host)
}

// sortedKeys returns a map's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
