// Package leaktest holds the goroutine-leak checks shared by the test
// binaries of packages that use sarama.
package leaktest

import (
	"testing"

	"go.uber.org/goleak"
)

// Sarama lists the background goroutines sarama leaves behind by design,
// which no Close can end:
//   - go-metrics ticks every meter from one process-wide goroutine that
//     starts with the first meter and never stops;
//   - a producer's circuit breaker, once open, sleeps out its timeout in a
//     goroutine of its own (10 s), even after the producer is closed.
//
// Everything else must be gone when the tests end.
func Sarama() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
		goleak.IgnoreAnyFunction("github.com/eapache/go-resiliency/breaker.(*Breaker).timer"),
	}
}

// Main runs the tests of a package that uses sarama and fails the run if
// any goroutine other than sarama's own is left behind.
func Main(m *testing.M) { goleak.VerifyTestMain(m, Sarama()...) }
