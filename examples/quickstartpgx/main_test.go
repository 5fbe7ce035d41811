package main

import (
	"os"
	"testing"

	"github.com/eventsync/outbox/internal/programtest"
)

func TestMain(m *testing.M) {
	programtest.RunMain(main) // when the test re-executes itself as the program
	os.Exit(m.Run())
}

// The program, run as a user runs it, delivers its event to Redis and
// stops cleanly on Ctrl-C.
func TestDeliversAndStopsOnCtrlC(t *testing.T) { programtest.Quickstart(t) }
