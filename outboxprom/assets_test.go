package outboxprom_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/eventsync/outbox"
)

// The monitoring assets this package's metrics are documented with.
const (
	alertsFile    = "../examples/monitoring/alerts.yml"
	dashboardFile = "../examples/monitoring/dashboard.json"
)

// assetLabels are the labels the expressions may group or match on: the
// metrics' own and the ones Prometheus adds to every target.
var assetLabels = []string{"type", "topic", "mode", "le", "job", "instance", "__name__"}

// assetChecker checks PromQL expressions against the metrics this
// package exports.
type assetChecker struct {
	kinds     map[string]dto.MetricType // exported metric family → its type
	tableWide map[string]bool           // gauges that describe the whole table, the same on every instance
}

// newAssetChecker gathers what a Metrics that has seen a publication, a
// failure and a burial, and a StatsCollector, export.
func newAssetChecker(t *testing.T) *assetChecker {
	t.Helper()
	gather := func(cs ...prometheus.Collector) []*dto.MetricFamily {
		reg := prometheus.NewRegistry()
		reg.MustRegister(cs...)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		return mfs
	}
	m := newMetrics(t)
	m.AfterPublish(t.Context(), outbox.PublishDone{Events: []*outbox.Event{{ID: "a", Topic: "t", Type: "x"}}})
	m.AfterPublish(t.Context(), outbox.PublishDone{Events: []*outbox.Event{{ID: "b", Topic: "t", Type: "x"}},
		Failed: map[string]error{"b": os.ErrClosed}, Dead: []string{"b"}})
	owner := func() *fakeRunway {
		f := &fakeRunway{partitioned: true}
		f.st = outbox.Stats{PendingByType: map[string]int64{"x": 1}}
		f.own(0, 1)
		return f
	}
	stats := newStats(t, owner())
	c := &assetChecker{kinds: map[string]dto.MetricType{}, tableWide: map[string]bool{}}
	for _, mf := range gather(m, stats) {
		c.kinds[mf.GetName()] = mf.GetType()
	}
	for _, mf := range gather(newStats(t, owner())) {
		switch mf.GetName() {
		case "outbox_stats_up": // says whether this instance could read the table
		case "outbox_partitions_owned": // this instance's share: summed over instances, it counts the owned partitions
		default:
			c.tableWide[mf.GetName()] = true
		}
	}
	if len(c.tableWide) < 5 || !c.tableWide["outbox_events_pending"] || c.kinds["outbox_partitions_owned"] != dto.MetricType_GAUGE {
		t.Fatalf("table-wide gauges: %v; kinds %v", c.tableWide, c.kinds)
	}
	return c
}

// metric returns the problem with a series name, or "".
func (c *assetChecker) metric(name string) string {
	if _, ok := c.kinds[name]; ok {
		if c.kinds[name] == dto.MetricType_HISTOGRAM {
			return fmt.Sprintf("%s is a histogram: select its _bucket, _sum or _count series", name)
		}
		return ""
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && c.kinds[base] == dto.MetricType_HISTOGRAM {
			return ""
		}
	}
	return fmt.Sprintf("%s is not a metric outboxprom exports", name)
}

// dropsInstance says whether an aggregation merges the series of
// different instances.
func dropsInstance(n *promNode) bool {
	if !n.grouped {
		return true
	}
	return slices.Contains(n.labels, "instance") == n.without
}

// check returns the problems of an expression: a parse error, or unknown
// metrics and labels, a misused histogram_quantile, and table-wide gauges
// summed across instances.
func (c *assetChecker) check(expr string) []string {
	root, err := parsePromQL(expr)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	root.walk(nil, func(n *promNode, above []*promNode) {
		for _, l := range append(slices.Clone(n.labels), n.matchers...) {
			if !slices.Contains(assetLabels, l) {
				add("label %q (at offset %d) is on none of the metrics", l, n.pos)
			}
		}
		switch n.kind {
		case "selector":
			if p := c.metric(n.name); p != "" {
				add("%s", p)
			}
			if !c.tableWide[n.name] {
				break
			}
			// Every instance exports the same table-wide figures: summing
			// or counting them over instances multiplies them. The first
			// aggregation that merges instances must not be sum or count
			// (max, min or avg give the figure itself).
			for _, a := range slices.Backward(above) {
				if a.kind != "agg" || !dropsInstance(a) {
					continue
				}
				if a.name == "sum" || a.name == "count" {
					add("%s (at offset %d) merges the instances' copies of the table-wide %s: take max by (...) over instances first",
						a.name, a.pos, n.name)
				}
				break
			}
		case "call":
			if n.name != "histogram_quantile" {
				break
			}
			q := n.args[0]
			if v, err := strconv.ParseFloat(q.text, 64); q.kind != "number" || err != nil || v < 0 || v > 1 {
				add("histogram_quantile (at offset %d) wants a quantile between 0 and 1 first, got a %s %s", n.pos, q.kind, q.text)
			}
			n.args[1].walk(nil, func(s *promNode, _ []*promNode) {
				if s.kind == "selector" && !strings.HasSuffix(s.name, "_bucket") {
					add("histogram_quantile (at offset %d) over %s, not a _bucket series", n.pos, s.name)
				}
				if s.kind == "agg" && slices.Contains(s.labels, "le") == s.without {
					add("%s (at offset %d) under histogram_quantile drops the le label", s.name, s.pos)
				}
			})
		}
	})
	return problems
}

// alertExprs returns the expr of every rule in a Prometheus rule file,
// and the number of rules. It reads the plain, quoted and block (>-, |)
// scalars this file uses, without a YAML library.
func alertExprs(t *testing.T, text string) (exprs []string, rules int) {
	t.Helper()
	lines := strings.Split(text, "\n")
	key := regexp.MustCompile(`^(\s*)(- )?(alert|record|expr):\s*(.*)$`)
	for i := 0; i < len(lines); i++ {
		m := key.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		if m[3] != "expr" {
			rules++
			continue
		}
		indent, value := len(m[1]), strings.TrimSpace(m[4])
		var block []string
		for i+1 < len(lines) {
			next := lines[i+1]
			if strings.TrimSpace(next) != "" && len(next)-len(strings.TrimLeft(next, " ")) <= indent {
				break
			}
			block = append(block, strings.TrimSpace(next))
			i++
		}
		switch {
		case strings.HasPrefix(value, ">") || strings.HasPrefix(value, "|"):
			value = strings.TrimSpace(strings.Join(block, "\n"))
		case strings.HasPrefix(value, `"`):
			v, err := strconv.Unquote(value)
			if err != nil {
				t.Errorf("%s: expr %s: %v", alertsFile, value, err)
			}
			value = v
		case strings.HasPrefix(value, "'"):
			value = strings.ReplaceAll(strings.Trim(value, "'"), "''", "'")
		default: // a plain scalar may go on over more-indented lines
			value = strings.TrimSpace(value + "\n" + strings.Join(block, "\n"))
		}
		exprs = append(exprs, value)
	}
	return exprs, rules
}

// dashboardExprs returns the expr of every query of a Grafana dashboard
// and the PromQL inside its label_values() variables, and the number of
// panel targets, each of which must have an expr.
func dashboardExprs(t *testing.T, v any) (exprs []string, targets int) {
	t.Helper()
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)$`)
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch v := v.(type) {
		case map[string]any:
			if key == "targets" {
				targets++
				if _, ok := v["expr"].(string); !ok {
					t.Errorf("%s: a target without an expr: %v", dashboardFile, v)
				}
			}
			for k, x := range v {
				walk(x, k)
			}
		case []any:
			for _, x := range v {
				walk(x, key)
			}
		case string:
			switch {
			case key == "expr":
				exprs = append(exprs, v)
			case key == "query" && strings.HasPrefix(v, "label_values("):
				m := labelValues.FindStringSubmatch(v)
				if m == nil || !slices.Contains(assetLabels, m[2]) {
					t.Errorf("%s: variable query %q: want label_values(<selector>, <label>)", dashboardFile, v)
					return
				}
				exprs = append(exprs, m[1])
			}
		}
	}
	walk(v, "")
	return exprs, targets
}

// TestMonitoringAssets checks that the alert rules and the dashboard in
// examples/monitoring use only metric names this package exports, that
// the dashboard is valid JSON, and that every PromQL expression in them
// is well-formed: balanced brackets, real functions with the right
// number of arguments, exported metrics and labels, histogram_quantile
// over buckets that keep le, and table-wide gauges (every instance
// exports the same figures) never summed across instances.
func TestMonitoringAssets(t *testing.T) {
	t.Parallel()
	c := newAssetChecker(t)
	name := regexp.MustCompile(`\boutbox_[a-z0-9_]+`)
	for _, file := range []string{alertsFile, dashboardFile} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		used := 0
		for _, n := range name.FindAllString(string(b), -1) {
			if p := c.metric(n); p != "" && c.kinds[n] != dto.MetricType_HISTOGRAM { // prose may name a histogram
				t.Errorf("%s: %s", file, p)
			}
			used++
		}
		if used < 5 {
			t.Errorf("%s uses only %d outbox metrics", file, used)
		}

		var exprs []string
		if strings.HasSuffix(file, ".json") {
			var v map[string]any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			var targets int
			exprs, targets = dashboardExprs(t, v)
			if len(exprs) < 15 || targets < 10 {
				t.Errorf("%s: %d expressions in %d panels' targets, want many more", file, len(exprs), targets)
			}
		} else {
			var rules int
			exprs, rules = alertExprs(t, string(b))
			if len(exprs) != rules || rules < 5 {
				t.Errorf("%s: %d expressions for %d rules", file, len(exprs), rules)
			}
		}
		t.Logf("%s: %d expressions", file, len(exprs))
		for _, e := range exprs {
			for _, p := range c.check(e) {
				t.Errorf("%s: %s\n\tin %s", file, p, e)
			}
		}
	}
}

// TestMonitoringAssetsChecker makes sure the checks of
// TestMonitoringAssets catch broken expressions, the ones once shipped
// among them, and pass good ones.
func TestMonitoringAssetsChecker(t *testing.T) {
	t.Parallel()
	c := newAssetChecker(t)
	good := []string{
		`sum by (job) (max by (job, type) (outbox_events_pending)) > 1000`,
		`sum(max by (job, type) (outbox_events_pending{job=~"$job"})) or vector(0)`,
		`sum by (job, instance) (outbox_events_pending)`, // per instance: no double count
		`max without (instance) (outbox_events_dead) > 0`,
		`histogram_quantile(0.5, sum by (le) (rate(outbox_sync_lag_seconds_bucket{job=~"$job"}[$__rate_interval])))`,
		`sum(rate(outbox_relay_batch_size_sum[5m])) / sum(rate(outbox_relay_batch_size_count[5m]))`,
		"sum by (job) (rate(outbox_events_failed_total[5m]))\n  / clamp_min(sum by (job) (rate(outbox_events_published_total[5m])), 1e-9) > 0.05",
		`max by (job, instance) (outbox_circuit_breaker_open) == bool 1`,
		`outbox_stats_up - on (job) group_left () -outbox_circuit_breaker_open offset 5m`,
		`{__name__="outbox_stats_up", job!~"x|y"} * 2 ^ 3 ^ max_over_time(outbox_oldest_pending_age_seconds[1h:5m])`,
		`topk(3, sum by (type) (increase(outbox_events_dead_total[1d])))`,
		`sum by (job) (outbox_partitions_owned)`, // each instance's own share
	}
	for _, e := range good {
		if p := c.check(e); len(p) > 0 {
			t.Errorf("good expression rejected: %s\n\t%v", e, p)
		}
	}

	bad := map[string]string{
		// Once in dashboard.json and alerts.yml.
		`histogram_0.5uantile(q, sum by (le) (rate(outbox_sync_lag_seconds_bucket{job=~"$job"}[$__rate_interval])))`: "unexpected",
		`sum by (job) (outbox_events_pending) > 1000`:                                                                "table-wide outbox_events_pending",
		`sum(outbox_events_pending{job=~"$job"}) or vector(0)`:                                                       "table-wide outbox_events_pending",
		`sum by (type) (outbox_events_pending{job=~"$job"})`:                                                         "table-wide outbox_events_pending",
		`count(max by (job, instance) (outbox_events_dead))`:                                                         "table-wide outbox_events_dead",
		`sum(rate(outbox_events_published_total[5m])`:                                                                "unclosed",
		`sum(rate(outbox_events_published_total[5m)))`:                                                               "unbalanced",
		`max(outbox_events_dead{job=~"$job})`:                                                                        "unterminated",
		`rat(outbox_events_published_total[5m])`:                                                                     `unknown function "rat"`,
		`histogram_quantile(outbox_sync_lag_seconds_bucket)`:                                                         "takes 2 arguments, got 1",
		`rate(outbox_events_published_total)`:                                                                        "wants a range vector",
		`sum(outbox_events_pendng)`:                                                                                  "not a metric outboxprom exports",
		`outbox_events_pending_count`:                                                                                "not a metric outboxprom exports",
		`rate(outbox_sync_lag_seconds[5m])`:                                                                          "is a histogram",
		`sum by (tpye) (rate(outbox_events_dead_total[5m]))`:                                                         `label "tpye"`,
		`histogram_quantile(0.99, sum by (job) (rate(outbox_sync_lag_seconds_bucket[5m])))`:                          "drops the le label",
		`histogram_quantile(99, sum by (le) (rate(outbox_sync_lag_seconds_bucket[5m])))`:                             "between 0 and 1",
		`histogram_quantile(0.9, sum by (le) (rate(outbox_publish_duration_seconds_count[5m])))`:                     "not a _bucket series",
		`sum by (job) rate(outbox_events_failed_total[5m])`:                                                          `want "("`,
		`sum(rate(outbox_events_failed_total[5m])) sum(rate(outbox_events_published_total[5m]))`:                     "unexpected",
		`sum(rate(outbox_events_failed_total[5m])) / / 2`:                                                            "unexpected",
		`max(outbox_oldest_pending_age_seconds{job=~"$job"}[$job])`:                                                  "want a duration",
		`sum by (job) (max by (job) (outbox_events_pending)) by (type)`:                                              "second grouping clause",
		`max by (job) (outbox_events_pending) >`:                                                                     "unexpected end",
		`max by (job) (outbox_events_pending) > without`:                                                             "keyword",
		`quantile(outbox_oldest_pending_age_seconds)`:                                                                "takes 2 arguments",
		`(outbox_oldest_pending_age_seconds + 1)[5m]`:                                                                "not a selector",
		`max(outbox_oldest_pending_age_seconds) > 5 bool`:                                                            "unexpected",
		`sum(rate(outbox_events_published_total[5m])) + bool sum(rate(outbox_events_failed_total[5m]))`:              "bool after",
	}
	for e, want := range bad {
		p := c.check(e)
		if !strings.Contains(strings.Join(p, "\n"), want) {
			t.Errorf("%s\n\tgot problems %q, want one with %q", e, p, want)
		}
	}
}
