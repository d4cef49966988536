package kafkatest

import (
	"os/exec"
	"syscall"
)

// setDeathSignal kills the broker when the test binary dies (a panic, a
// go test -timeout), so that no JVM outlives its test.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
