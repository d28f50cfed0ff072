package app_test

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/invitegate/invitegate/internal/config"
	"github.com/invitegate/invitegate/internal/persist"
)

// TestAckMongoAnswersOnlyWhatMongoHolds: with INVITEGATE_ACK=mongo and no
// reconciler, a 201 means the registration is already in MongoDB; a repeat
// is answered from the Redis mark set after that write, and without the
// mark it is answered only after MongoDB holds the registration again.
func TestAckMongoAnswersOnlyWhatMongoHolds(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, deployments[1]) // K=16
	e.cfg.Ack = config.AckMongo
	e.cfg.Reconciler = false
	e.create(t, "durable", 10)
	m, _ := e.start(t)
	base := m.PublicAddr
	regs := e.db.Collection(persist.RegistrationsCollection)

	if st := post(t, base, "durable", "Dee@Example.com"); st != 201 {
		t.Fatalf("first signup: %d, want 201", st)
	}
	// No reconciler runs: only the handler can have written it.
	if reg, ok, err := e.store.Registration(ctx, "dee@example.com"); err != nil || !ok || reg.Invitation != "durable" {
		t.Fatalf("after the 201 MongoDB has %+v (ok %v, err %v)", reg, ok, err)
	}

	// Remove the registration behind the service's back: the repeat is
	// answered from the mark, MongoDB is not read.
	if _, err := regs.DeleteOne(ctx, bson.D{{Key: "_id", Value: "dee@example.com"}}); err != nil {
		t.Fatal(err)
	}
	if st := post(t, base, "durable", "dee@example.com"); st != 200 {
		t.Fatalf("repeat with the mark: %d, want 200", st)
	}
	if _, ok, _ := e.store.Registration(ctx, "dee@example.com"); ok {
		t.Fatal("the repeat with a mark wrote to MongoDB; it should not have asked")
	}

	// Without the mark the repeat checks MongoDB, finds nothing and writes
	// the registration before answering.
	keys, err := e.rdb.Keys(ctx, "{"+e.cfg.RedisNamespace+":*}:d:dee@example.com").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("durable mark keys %v (err %v), want 1", keys, err)
	}
	if err := e.rdb.Del(ctx, keys[0]).Err(); err != nil {
		t.Fatal(err)
	}
	if st := post(t, base, "durable", "dee@example.com"); st != 200 {
		t.Fatalf("repeat without the mark: %d, want 200", st)
	}
	if reg, ok, err := e.store.Registration(ctx, "dee@example.com"); err != nil || !ok || reg.Invitation != "durable" {
		t.Fatalf("after the unmarked repeat MongoDB has %+v (ok %v, err %v)", reg, ok, err)
	}
}
