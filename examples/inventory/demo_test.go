package main

import (
	"context"
	"strings"
	"testing"
)

// TestDemo runs the demo as main does and expects every check to pass.
func TestDemo(t *testing.T) {
	var out strings.Builder
	err := runDemo(context.Background(), &out, testLogger(t))
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	if !strings.Contains(out.String(), "PASS") {
		t.Error("the report does not end in PASS")
	}
	// Each saved event says what became of it in the SDK's words: with
	// the broker up, acknowledged or handed to the relay (never a failure
	// such as "pending (will retry)"); with it down, waiting for a retry
	// or handed to the relay.
	step := ""
	for _, line := range strings.Split(out.String(), "\n") {
		if len(line) > 2 && line[0] >= '1' && line[0] <= '9' && line[1] == '.' {
			step = line[:1]
		}
		_, state, ok := strings.Cut(line, " saved, ")
		if !ok {
			continue
		}
		words := []string{"acknowledged", "handed to the relay: "}
		if step == "2" {
			words = []string{"waiting for a retry", "handed to the relay: "}
		}
		if !strings.HasPrefix(state, words[0]) && !strings.HasPrefix(state, words[1]) {
			t.Errorf("step %s: %q, want it to start with %q", step, line, words)
		}
	}
}
