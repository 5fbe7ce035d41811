package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a command leaves a goroutine behind (a
// database it did not close).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
