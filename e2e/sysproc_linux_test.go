package e2e

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel kill a started process if the test binary
// dies without cleaning up (a panic, a -timeout kill), so that no redis-server,
// pm-node or haproxy outlives a run.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
