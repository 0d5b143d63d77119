package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logBuffer collects a process's output (across restarts) for failure
// reports and for the lines the harness waits for.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// mark appends a line of the harness's own, e.g. "--- restarted ---".
func (l *logBuffer) mark(format string, args ...any) {
	_, _ = fmt.Fprintf(l, "--- e2e: "+format+" ---\n", args...)
}

// Len returns how many bytes were written so far.
func (l *logBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

// since returns what was written after offset.
func (l *logBuffer) since(offset int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b.Bytes()[offset:])
}

func (l *logBuffer) String() string { return l.since(0) }

// tail returns the last n lines.
func (l *logBuffer) tail(n int) string {
	s := strings.TrimRight(l.String(), "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[… %d earlier lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// proc is one child process of the test binary.
type proc struct {
	name   string
	cmd    *exec.Cmd
	out    *logBuffer
	exited chan struct{} // closed once the process has exited and its output is read
	err    error         // cmd.Wait's result; set before exited is closed
}

// startProc starts bin with args and env (added to a copy of the test's
// environment without any PM_* variable), writing its output to out.
func startProc(name string, out *logBuffer, env []string, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second // don't hang on output pipes a grandchild holds
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, out: out, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// cleanEnv is the test's environment minus PM_* variables, so that a
// developer's settings never leak into the nodes.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PM_") {
			env = append(env, kv)
		}
	}
	return env
}

// running reports whether the process has not exited yet.
func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// signal sends sig and waits up to timeout for the process to exit; then it
// kills it. It returns the exit error (nil for status 0) or an error saying
// the process had to be killed.
func (p *proc) signal(sig syscall.Signal, timeout time.Duration) error {
	if !p.running() {
		return p.err
	}
	_ = p.cmd.Process.Signal(sig)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.exited:
		return p.err
	case <-t.C:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	return fmt.Errorf("%s did not exit within %v of %v: killed", p.name, timeout, sig)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Callers that bind it later retry with another one if it got taken.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("e2e: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(tb testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	tb.Helper()
	if err := poll(timeout, cond); err != nil {
		tb.Fatalf("e2e: %s: %v", fmt.Sprintf(format, args...), err)
	}
}

// errTimeout is poll's error when cond never held.
var errTimeout = errors.New("condition not met in time")

// poll calls cond every 10ms until it returns true (nil) or timeout passes.
func poll(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%w (%v)", errTimeout, timeout)
		}
		<-tick.C
	}
	return nil
}
