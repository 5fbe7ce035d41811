// Package multiproc holds tests of relays that run in processes of their
// own over one table: each process relays (Run) and also writes events
// and publishes them at once after commit, on aggregates it shares with
// the other processes, while the test starts, stops (SIGTERM) and kills
// (SIGKILL) them. The stream is then compared with the table: nothing
// lost, no duplicate without a crash, and each aggregate's events in save
// order. It has no code outside its tests.
package multiproc
