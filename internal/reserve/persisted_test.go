package reserve_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
)

// TestPersistedMarks: a repeat is answered from the mark whether or not it
// names its entry; the reconciler's Committed is true only for the very
// entry (code and ID) the group commit confirmed, on a node and a cluster
// (one MGET per shard: the marks share the shard's slot).
func TestPersistedMarks(t *testing.T) {
	for _, b := range append(realBackends(), miniBackend()) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			r := reserve.New(b.client(t), reserve.Config{Namespace: testenv.KeyPrefix(t), Shards: 16})
			// Two emails on one shard, one on another.
			var same []string
			for i := 0; len(same) < 2; i++ {
				e := fmt.Sprintf("m%d@example.com", i)
				if r.ShardOf(e) == r.ShardOf("a@example.com") {
					same = append(same, e)
				}
			}
			s := r.ShardOf(same[0])
			if err := r.MarkPersisted(ctx, same[0], "c", "5-0"); err != nil {
				t.Fatal(err)
			}
			if err := r.MarkPersisted(ctx, same[1], "c", ""); err != nil { // a repeat's mark
				t.Fatal(err)
			}
			for _, e := range same {
				if ok, err := r.Persisted(ctx, e, "c"); err != nil || !ok {
					t.Fatalf("Persisted(%s, c) = %v, %v; want true", e, ok, err)
				}
				if ok, err := r.Persisted(ctx, e, "d"); err != nil || ok {
					t.Fatalf("Persisted(%s, d) = %v, %v; want false", e, ok, err)
				}
			}
			got, err := r.Committed(ctx, s, []invite.Reservation{
				{ID: "5-0", Code: "c", Canonical: same[0]}, // the confirmed entry
				{ID: "6-0", Code: "c", Canonical: same[0]}, // another entry of the email
				{ID: "5-0", Code: "d", Canonical: same[0]}, // another code
				{ID: "7-0", Code: "c", Canonical: same[1]}, // a mark without an entry
				{ID: "8-0", Code: "c", Canonical: "nobody@example.com"},
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := []bool{true, false, false, false, false}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("Committed = %v, want %v", got, want)
			}
		})
	}
}
