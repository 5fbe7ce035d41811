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
}
