package integration

import (
	"os/exec"
	"syscall"
)

// setDeathSignal kills a child process when the test binary dies (a
// panic, a go test -timeout), so that no JVM or consumer outlives its
// benchmark.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
