// Package bench is the viral-spike benchmark behind `make bench`; all of it
// lives in its test files, so nothing here is linked into a binary.
//
// TestViralSpike starts everything on loopback: a redis-server (AOF,
// appendfsync always, as deployed), a MongoDB-wire server (FerretDB on
// SQLite, in a process of its own), `invitegate serve` built from
// cmd/invitegate with its production defaults, and the floor: a minimal gin
// handler, built only here, that decodes the same JSON and makes one
// EVALSHA of a trivial script against the same redis-server. vegeta (as a
// library) drives them, closed loop for throughput and open loop at a fixed
// rate for latency. After each scenario the harness checks the invariants in
// MongoDB: every 201 persisted, nothing else persisted, never more than
// max_uses per code, a code filled exactly when demand exceeded it.
//
// It prints one table: requests/s, latency percentiles, outcomes, admitted
// vs capacity, the serving process's peak RSS and the CPU seconds per 1,000
// requests of the serving process and of its store. INVITEGATE_BENCH=full
// runs the sizes docs/BENCHMARKS.md reports (about fifteen minutes); without it
// `make test` runs the same code on small sizes, so the harness itself is
// tested. INVITEGATE_BENCH_ONLY runs some of the sections alone
// (comma-separated: k1, k16, baseline, replica), e.g.
// INVITEGATE_BENCH=full INVITEGATE_BENCH_ONLY=replica for INVITEGATE_ACK=replica
// against its control on a primary with one replica behind Sentinel.
package bench
