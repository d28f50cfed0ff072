// Package faults is invitegate's fault-injection suite and has no code of
// its own: its tests run real `invitegate serve` and `invitegate reconcile`
// processes against a real redis-server and a MongoDB-wire server in a
// process of its own, kill or stop one of them in the middle of a spike,
// and check invariants I1–I5 afterwards.
package faults
