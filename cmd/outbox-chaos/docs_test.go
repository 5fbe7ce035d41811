package main

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The runs shown in docs/testing-and-fault-injection.md are this
// program's JSON lines, whole and consistent, and the text around them
// takes its figures from them: a count of duplicates in the prose is the
// duplicates of the line before it (the page once said 7,512 in the JSON
// and 7,457 below it).
func TestDocumentedRuns(t *testing.T) {
	page, err := os.ReadFile("../../docs/testing-and-fault-injection.md")
	if err != nil {
		t.Fatal(err)
	}
	parts := regexp.MustCompile("(?s)```json\n(.*?)\n```").Split(string(page), -1)
	blocks := regexp.MustCompile("(?s)```json\n(.*?)\n```").FindAllStringSubmatch(string(page), -1)
	if len(blocks) < 3 {
		t.Fatalf("%d JSON runs on the page, want the short idempotent, Kafka and long runs", len(blocks))
	}
	figure := regexp.MustCompile(`(\d[\d,]*) duplicates`)
	for i, b := range blocks {
		var r Result
		dec := json.NewDecoder(bytes.NewReader([]byte(b[1])))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Errorf("run %d is not a line of this program: %v", i+1, err)
			continue
		}
		if r.Duplicates != r.Delivered-r.DeliveredUnique {
			t.Errorf("run %d: duplicates %d, but delivered %d - unique %d = %d", i+1, r.Duplicates, r.Delivered, r.DeliveredUnique, r.Delivered-r.DeliveredUnique)
		}
		sum := 0
		for _, n := range r.Faults {
			sum += n
		}
		if sum != r.FaultsInjected {
			t.Errorf("run %d: faults add up to %d, faults_injected %d", i+1, sum, r.FaultsInjected)
		}
		if r.Lost != 0 || r.OrderViolations != 0 || r.Phantoms != 0 || r.Pending != 0 || r.Dead != 0 || (r.Idempotent && r.Duplicates != 0) {
			t.Errorf("run %d is a failed run: %+v", i+1, r)
		}
		// The prose up to the next run states no other count of duplicates.
		for _, m := range figure.FindAllStringSubmatch(parts[i+1], -1) {
			if n, _ := strconv.Atoi(strings.ReplaceAll(m[1], ",", "")); n != r.Duplicates {
				t.Errorf("after run %d the page says %q; the run says %d", i+1, m[0], r.Duplicates)
			}
		}
	}
}
