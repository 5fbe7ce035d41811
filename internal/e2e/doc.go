// Package e2e holds the end-to-end tests of the outbox: the root package's
// Outbox (Save, Publish and the relay) over the real SQL stores and the real Redis publisher,
// with the broker taken away and given back through a proxy.
package e2e
