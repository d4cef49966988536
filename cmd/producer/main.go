// Command producer publishes CSV transactions to a Kafka topic, and
// generates synthetic ones (producer gen). See producer --help.
package main

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"
)

func main() {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	os.Exit(run(os.Args[1:], env{
		stdin:      os.Stdin,
		stdout:     os.Stdout,
		stderr:     os.Stderr,
		signals:    sigs,
		isTerminal: term.IsTerminal(int(os.Stderr.Fd())),
		termWidth: func() int {
			w, _, err := term.GetSize(int(os.Stderr.Fd()))
			if err != nil {
				return 0
			}
			return w
		},
	}))
}
