// Command producer publishes CSV transactions to a Kafka topic, and
// generates synthetic ones (producer gen) or prints what a correct consumer
// computes from a file (producer expect). See producer --help; the logic is
// in package producer.
package main

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/txstream/txstream/producer"
)

func main() {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	os.Exit(producer.Run(os.Args[1:], producer.Env{
		Stdin:      os.Stdin,
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		Signals:    sigs,
		IsTerminal: term.IsTerminal(int(os.Stderr.Fd())),
		TermWidth: func() int {
			w, _, err := term.GetSize(int(os.Stderr.Fd()))
			if err != nil {
				return 0
			}
			return w
		},
	}))
}
