package main

import "context"

func runKafkaRelay(ctx context.Context, b *bench) error { return nil }
func runLatency(ctx context.Context, b *bench) error    { return nil }
func runOutage(ctx context.Context, b *bench) error     { return nil }
func runMemory(ctx context.Context, b *bench) error     { return nil }
func runSave(ctx context.Context, b *bench) error       { return nil }
func runCompression(ctx context.Context, b *bench) error {
	return nil
}

const childCommand = "relay-child"

func childMain(args []string) int { return 0 }

func evaluate(r *results, cfg config) {}
