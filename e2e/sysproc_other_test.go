//go:build !linux

package e2e

import "os/exec"

// setProcAttr does nothing where the kernel cannot kill orphans for us;
// t.Cleanup still stops every process of a test that ends normally.
func setProcAttr(*exec.Cmd) {}
