package s3test

import (
	"os/exec"
	"syscall"
)

// setDeathSignal kills the server when the test binary dies (a panic, a
// go test -timeout), so that no server outlives its test.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
