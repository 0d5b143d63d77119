// Command pmctl is pm's operator CLI:
//
//	pmctl token  prints a signed HS256 token for a user of a tenant , optionally with a name and email
//	pmctl tail   prints a project's events as they cross Redis (no node needed)
//	pmctl demo   seeds a demo project through a node, idempotently
//	pmctl get    prints a project's board, grouped by status
//	pmctl create creates a work item (or a project)
//	pmctl update changes fields of a work item
//	pmctl delete deletes a work item
//
// Every flag falls back to an environment variable (shown in `pmctl <command> -h`),
// e.g. PM_JWT_SECRET, PM_REDIS_URL, PM_REDIS_PREFIX, PM_URL, PM_TOKEN.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// env is what a command reads besides its arguments.
type env struct {
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
}

// command is one pmctl subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env, args []string) error
}

var commands = []command{
	{"token", "print a signed HS256 token for a user of a tenant", tokenCmd},
	{"tail", "print a project's events as they cross Redis", tailCmd},
	{"demo", "seed a demo project through a node (idempotent)", demoCmd},
	{"get", "print a project's board grouped by status", getCmd},
	{"create", "create a work item or a project", createCmd},
	{"update", "change fields of a work item", updateCmd},
	{"delete", "delete a work item", deleteCmd},
}

// errUsage marks a usage error already explained on stderr.
var errUsage = errors.New("usage")

// run runs pmctl and returns its exit status: 0 ok, 1 failure, 2 usage.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	usage := func() {
		fmt.Fprintln(stderr, "usage: pmctl <command> [flags]\n\ncommands:")
		for _, c := range commands {
			fmt.Fprintf(stderr, "  %-6s %s\n", c.name, c.summary)
		}
		fmt.Fprintln(stderr, "\nRun `pmctl <command> -h` for its flags.")
	}
	if len(args) == 0 {
		usage()
		return 2
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		usage()
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, env{getenv: getenv, stdout: stdout, stderr: stderr}, args[1:])
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		}
		fmt.Fprintf(stderr, "pmctl %s: %v\n", c.name, err)
		return 1
	}
	fmt.Fprintf(stderr, "pmctl: unknown command %q\n", args[0])
	usage()
	return 2
}

// flags is a subcommand's flag set whose flags default to environment
// variables.
type flags struct {
	*flag.FlagSet
	e       env
	errs    []error
	secrets []func() // fill secret flags from the environment after parsing
}

func newFlags(e env, name, synopsis string) *flags {
	fs := flag.NewFlagSet("pmctl "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: pmctl %s %s\n\nflags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return &flags{FlagSet: fs, e: e}
}

func (f *flags) envOr(name, def string) string {
	if name != "" {
		if v := f.e.getenv(name); v != "" {
			return v
		}
	}
	return def
}

func envNote(name string) string {
	if name == "" {
		return ""
	}
	return " (" + name + ")"
}

func (f *flags) str(p *string, name, envName, def, usage string) {
	f.StringVar(p, name, f.envOr(envName, def), usage+envNote(envName))
}

// secret is a string flag whose environment value is never shown as its
// default in -h.
func (f *flags) secret(p *string, name, envName, usage string) {
	f.StringVar(p, name, "", usage+envNote(envName))
	f.secrets = append(f.secrets, func() {
		if *p == "" {
			*p = f.e.getenv(envName)
		}
	})
}

func (f *flags) boolean(p *bool, name, envName string, def bool, usage string) {
	v, err := strconv.ParseBool(f.envOr(envName, strconv.FormatBool(def)))
	if err != nil {
		f.errs = append(f.errs, fmt.Errorf("%s: %w", envName, err))
	}
	f.BoolVar(p, name, v, usage+envNote(envName))
}

func (f *flags) duration(p *time.Duration, name, envName string, def time.Duration, usage string) {
	v, err := time.ParseDuration(f.envOr(envName, def.String()))
	if err != nil {
		f.errs = append(f.errs, fmt.Errorf("%s: %w", envName, err))
	}
	f.DurationVar(p, name, v, usage+envNote(envName))
}

// parse parses args; on a usage error it prints the usage and returns errUsage.
func (f *flags) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage // the flag package printed the problem and the usage
	}
	if f.NArg() > 0 {
		return f.fail("unexpected arguments: %v", f.Args())
	}
	for _, fill := range f.secrets {
		fill()
	}
	if len(f.errs) > 0 {
		return f.fail("%v", errors.Join(f.errs...))
	}
	return nil
}

// fail prints a usage problem and the usage, and returns errUsage.
func (f *flags) fail(format string, args ...any) error {
	fmt.Fprintf(f.e.stderr, "%s: %s\n", f.Name(), fmt.Sprintf(format, args...))
	f.Usage()
	return errUsage
}

// required checks that the named flags are set.
func (f *flags) required(values map[string]string) error {
	for _, name := range slices.Sorted(maps.Keys(values)) {
		if values[name] == "" {
			return f.fail("-%s is required", name)
		}
	}
	return nil
}

// uuidFlag parses a UUID flag value; "" gives uuid.Nil when optional.
func (f *flags) uuidFlag(name, value string, optional bool) (uuid.UUID, error) {
	if value == "" && optional {
		return uuid.Nil, nil
	}
	id, err := uuid.Parse(value)
	if err != nil {
		return uuid.Nil, f.fail("-%s %q is not a UUID", name, value)
	}
	return id, nil
}

// connFlags are the flags every command that talks to a node has.
type connFlags struct {
	url, token string
	timeout    time.Duration
}

// conn defines -url, -token (of a user who may do what) and -timeout.
func (f *flags) conn(c *connFlags, who string, timeout time.Duration) {
	f.str(&c.url, "url", "PM_URL", "ws://127.0.0.1:8080/ws", "node (or load balancer) WebSocket URL")
	f.secret(&c.token, "token", "PM_TOKEN", "bearer token of a user who may "+who)
	f.duration(&c.timeout, "timeout", "", timeout, "give up after this long")
}

// dial connects for one command; the caller closes the client and cancels.
func (c connFlags) dial(ctx context.Context) (*client.Client, context.Context, context.CancelFunc, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	cl, err := client.Dial(ctx, c.url, client.Options{Token: c.token})
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return cl, ctx, cancel, nil
}
