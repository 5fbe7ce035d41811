package outboxprom_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/outboxprom"
)

// TestMonitoringAssets checks that the alert rules and the dashboard in
// examples/monitoring use only metric names this package exports, and
// that the dashboard is valid JSON.
func TestMonitoringAssets(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := outboxprom.New()
	reg.MustRegister(m, outboxprom.NewStatsCollector(&fakeStats{st: outbox.Stats{PendingByType: map[string]int64{"x": 1}}}))
	m.AfterPublish(t.Context(), outbox.PublishDone{Events: []*outbox.Event{{ID: "a", Topic: "t", Type: "x"}}})
	m.AfterPublish(t.Context(), outbox.PublishDone{Events: []*outbox.Event{{ID: "b", Topic: "t", Type: "x"}},
		Failed: map[string]error{"b": os.ErrClosed}, Buried: []string{"b"}})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, mf := range mfs {
		exported[mf.GetName()] = true
	}
	name := regexp.MustCompile(`\boutbox_[a-z0-9_]+`)
	for _, file := range []string{"../examples/monitoring/alerts.yml", "../examples/monitoring/dashboard.json"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(file, ".json") {
			var v map[string]any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Errorf("%s: %v", file, err)
			}
		}
		used := 0
		for _, n := range name.FindAllString(string(b), -1) {
			base := n
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if s, ok := strings.CutSuffix(n, suffix); ok && exported[s] {
					base = s
				}
			}
			if !exported[base] {
				t.Errorf("%s uses %s, which outboxprom does not export", file, n)
			}
			used++
		}
		if used < 5 {
			t.Errorf("%s uses only %d outbox metrics", file, used)
		}
	}
}
