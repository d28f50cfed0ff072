package main

import (
	"strings"
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/testenv"
)

// TestThroughSentinel: invitectl takes the service's Sentinel settings,
// works on the current primary, and after a failover on the promoted one;
// Sentinel together with cluster mode is refused before anything is done.
func TestThroughSentinel(t *testing.T) {
	g := testenv.StartSentinelGroup(t, testenv.SentinelOptions{Password: "pw"})
	c := newCtl(t, "2")
	c.env["INVITEGATE_REDIS_ADDRS"] = strings.Join(g.SentinelAddrs(), ",")
	c.env["INVITEGATE_REDIS_SENTINEL_MASTER"] = g.MasterName
	c.env["INVITEGATE_REDIS_SENTINEL_PASSWORD"] = "pw"

	c.must(t, "create", "sen", "--max", "4")
	g.WaitReplicated(t)
	old := g.Primary(t)
	old.Kill(t)
	g.WaitForPromotion(t, old, 30*time.Second)
	c.must(t, "set-max", "sen", "6") // after the failover
	rows := listJSON(t, c)
	if len(rows) != 1 || rows[0].MaxUses != 6 || rows[0].Remaining != 6 || !rows[0].Seeded {
		t.Fatalf("list after the failover: %+v, want sen with 6 of 6 remaining", rows)
	}

	c.env["INVITEGATE_REDIS_CLUSTER"] = "true"
	if code, _, errOut := c.run(t, "list"); code != exitUsage || !strings.Contains(errOut, "exclude each other") {
		t.Fatalf("sentinel with cluster: exit %d, %q; want a usage error", code, errOut)
	}
}
