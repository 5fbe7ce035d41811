//go:build !unix

// Command outbox-chaos needs Unix signals (SIGKILL, SIGSTOP, SIGCONT) to
// inject its faults; see main.go.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "outbox-chaos: needs a Unix system (it stops and kills relay processes with signals)")
	os.Exit(2)
}
