package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
)

// redisLogger sends go-redis's own messages (dial failures, mostly) to
// slog at Debug: the outbox already logs each failed publication.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}

// routeRedisLogs sets go-redis's logger, which is process-wide; only main
// calls it.
func routeRedisLogs(log *slog.Logger) { redis.SetLogger(redisLogger{log}) }
