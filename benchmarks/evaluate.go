package main

import "fmt"

// evaluate relates each figure to its baseline and checks the targets.
func evaluate(r *results, cfg config) {
	rel := func(name, baseline string) *Result {
		res := r.get(name)
		r.relate(res, baseline)
		return res
	}
	ratio := func(target, name, baseline string, want float64) {
		res := rel(name, baseline)
		if res == nil || res.Baseline == "" {
			return
		}
		r.check(target, fmt.Sprintf("%.2f× (%s %.0f/s vs %s %.0f/s)", res.RatioToBaseline, name, res.EventsPerSec, baseline, r.get(baseline).EventsPerSec),
			res.RatioToBaseline >= want)
	}
	// The targets of the issue "Relay throughput: one write per event,
	// and relays that add up" (partition ownership).
	ratio("Postgres→Redis 1 relay ≥ 0.7× claim+mark limit (1 worker)", "relay_pg_redis_1r", "limit_pg_claim_mark_1w", 0.70)
	ratio("Postgres→Redis 2 relays ≥ 0.7× claim+mark limit (2 workers)", "relay_pg_redis_2r", "limit_pg_claim_mark_2w", 0.70)
	ratio("… the same over 10,000 aggregates", "relay_pg_redis_2r_10k_aggregates", "limit_pg_claim_mark_2w", 0.70)
	rel("relay_pg_redis_1r_unordered", "limit_pg_claim_mark_1w")
	rel("relay_pg_redis_2r_unordered", "limit_pg_claim_mark_2w")
	cmp := func(target, name, other string, want float64) {
		a, b := r.get(name), r.get(other)
		if a == nil || b == nil || b.EventsPerSec == 0 {
			return
		}
		x := a.EventsPerSec / b.EventsPerSec
		r.check(target, fmt.Sprintf("%.2f× (%.0f vs %.0f/s)", x, a.EventsPerSec, b.EventsPerSec), x >= want)
	}
	cmp("2 relays ≥ 1.3× 1 relay", "relay_pg_redis_2r", "relay_pg_redis_1r", 1.3)
	cmp("… over 10,000 aggregates: 2 relays ≥ 1.3× 1 relay", "relay_pg_redis_2r_10k_aggregates", "relay_pg_redis_1r", 1.3)
	cmp("1 relay ≥ 20× Watermill forwarder with defaults", "relay_pg_redis_1r", "watermill_forwarder_defaults", 20)
	cmp(fmt.Sprintf("1 relay ≥ 6× Watermill forwarder at batch %d", cfg.batch), "relay_pg_redis_1r", fmt.Sprintf("watermill_forwarder_batch_%d", cfg.batch), 6)
	ratio("MariaDB→Redis ≥ 70% of its claim+mark limit", "relay_mysql_redis_1r", "limit_mysql_claim_mark_1w", 0.70)
	ratio("SQLite→Redis ≥ 70% of its claim+mark limit", "relay_sqlite_redis_1r", "limit_sqlite_claim_mark_1w", 0.70)
	ratio("Postgres→Kafka ≥ 70% of Postgres→Redis", "relay_pg_kafka_1r", "relay_pg_redis_1r", 0.70)
	for _, l := range []struct {
		name   string
		target string
		max    float64
	}{
		{"latency_commit_to_ack_immediate_owner", "commit→ack p99 ≤ 1.5 ms with immediate publish (beside the owning relay)", 1500},
		{"latency_commit_to_ack_immediate", "commit→ack p99 ≤ 1.5 ms with immediate publish (no relay in the process)", 1500},
		{"latency_commit_to_ack_relay_notify", "commit→ack p99 ≤ 5 ms through the relay with notifications", 5000},
	} {
		if res := r.get(l.name); res != nil {
			r.check(l.target, fmt.Sprintf("p50 %.0f µs, p99 %.0f µs", res.P50us, res.P99us), res.P99us <= l.max)
		}
	}
	if res := r.get("outage_recovery_pg_redis_2r"); res != nil {
		r.check(fmt.Sprintf("%d-event backlog drained ≤ 20 s after the broker returns", res.Events), fmt.Sprintf("%.1f s", res.Seconds), res.Seconds <= 20)
	}
	small := r.get(fmt.Sprintf("memory_relay_process_%dk_backlog", cfg.events/1000))
	big := r.get(fmt.Sprintf("memory_relay_process_%dk_backlog", cfg.bigEvents/1000))
	if small != nil && big != nil && small != big {
		big.Baseline, big.RatioToBaseline = small.Scenario, round(big.PeakRSSMB/small.PeakRSSMB, 2)
		r.check("relay peak RSS grows < 20% from the small to the big backlog", fmt.Sprintf("%.1f → %.1f MB (%.2f×)", small.PeakRSSMB, big.PeakRSSMB, big.PeakRSSMB/small.PeakRSSMB),
			big.PeakRSSMB < 1.2*small.PeakRSSMB)
	}
	if res := r.get("save_outbox_1_event"); res != nil && res.RatioToBaseline > 0 {
		r.check("Save of 1 event ≤ 1.3× a plain single-row INSERT", fmt.Sprintf("%.2f× (p50 %.0f vs %.0f µs)", res.RatioToBaseline, res.P50us, r.get(res.Baseline).P50us), res.RatioToBaseline <= 1.3)
	}
	evaluatePartition(r)
	if res := r.get("save_outbox_100_events_one_call"); res != nil {
		r.check("Save of 100 events is one round trip", res.Note, res.Note == "1 statement(s) sent")
	}
}

// evaluatePartition relates the partition-ownership prototype's figures
// to the claim+mark limits and to each other, as informational lines: the
// targets the prototype is meant to reach if it were the SDK's relay.
func evaluatePartition(r *results) {
	const p = "proto_partition_pg_redis_"
	for _, c := range []struct{ name, baseline string }{
		{p + "1r", "limit_pg_claim_mark_1w"},
		{p + "2r", "limit_pg_claim_mark_2w"},
		{p + "2r_10k_aggregates", "limit_pg_claim_mark_2w"},
		{p + "1r_sequential", "limit_pg_claim_mark_1w"},
		{p + "2r_per_partition_read", "limit_pg_claim_mark_2w"},
	} {
		res := r.get(c.name)
		r.relate(res, c.baseline)
		if res == nil || res.Baseline == "" || c.name == p+"1r_sequential" || c.name == p+"2r_per_partition_read" {
			continue
		}
		r.info = append(r.info, check{fmt.Sprintf("prototype %s ≥ 0.7× %s", c.name, c.baseline),
			fmt.Sprintf("%.2f× (%.0f vs %.0f/s)", res.RatioToBaseline, res.EventsPerSec, r.get(c.baseline).EventsPerSec), res.RatioToBaseline >= 0.7})
	}
	one := r.get(p + "1r")
	for _, name := range []string{p + "2r", p + "2r_10k_aggregates"} {
		if two := r.get(name); two != nil && one != nil && one.EventsPerSec > 0 {
			x := two.EventsPerSec / one.EventsPerSec
			r.info = append(r.info, check{fmt.Sprintf("prototype %s ≥ 1.3× %s", name, one.Scenario),
				fmt.Sprintf("%.2f× (%.0f vs %.0f/s)", x, two.EventsPerSec, one.EventsPerSec), x >= 1.3})
		}
	}
}
