package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestSentinelGroupFailsOver: a write through a Sentinel-following client
// reaches the replica; once the primary is killed the Sentinels promote
// the replica, and the same client follows it and still reads the write.
// The Sentinels require a password here, which every helper passes.
func TestSentinelGroupFailsOver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g := StartSentinelGroup(t, SentinelOptions{Password: "s3cret"})
	if len(g.Nodes) != 2 || len(g.Sentinels) != 3 || len(g.SentinelAddrs()) != 3 {
		t.Fatalf("group: %d nodes, %d sentinels", len(g.Nodes), len(g.Sentinels))
	}
	old := g.Primary(t)
	if old != g.Nodes[0] || g.Replica(t) != g.Nodes[1] {
		t.Fatalf("primary %s, replica %s; want %s, %s", old.Addr, g.Replica(t).Addr, g.Nodes[0].Addr, g.Nodes[1].Addr)
	}
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: g.MasterName, SentinelAddrs: g.SentinelAddrs(), SentinelPassword: "s3cret",
	})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	g.WaitReplicated(t)
	replica := redis.NewClient(&redis.Options{Addr: g.Nodes[1].Addr})
	defer replica.Close()
	if v, err := replica.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("replica GET k = %q, %v; want v", v, err)
	}

	// Writes taken while the replica links are cut reach it once it is back.
	if n := old.KillReplicaLinks(t); n != 1 {
		t.Fatalf("KillReplicaLinks closed %d links, want 1", n)
	}
	if err := c.Set(ctx, "k2", "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	g.WaitReplicated(t)

	old.Kill(t)
	start := time.Now()
	p := g.WaitForPromotion(t, old, 20*time.Second)
	if p != g.Nodes[1] {
		t.Fatalf("promoted %s, want %s", p.Addr, g.Nodes[1].Addr)
	}
	t.Logf("promoted %s %v after the kill", p.Addr, time.Since(start).Round(time.Millisecond))
	if g.Primary(t) != p {
		t.Fatalf("Primary() = %s after the promotion, want %s", g.Primary(t).Addr, p.Addr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := c.Get(ctx, "k2").Result()
		if err == nil && v == "v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the failover client did not follow the new primary: %q, %v", v, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := c.Set(ctx, "k3", "v3", 0).Err(); err != nil {
		t.Fatalf("write on the new primary: %v", err)
	}
}

// TestStartReplicatedCluster: the cluster serves every slot from three
// masters, and each master's replica holds what was written to it.
func TestStartReplicatedCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rc := StartReplicatedCluster(t)
	checkCluster(t, rc.Addrs())
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs()})
	defer c.Close()
	if err := c.Set(ctx, "{x}:k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	m, err := c.MasterForKey(ctx, "{x}:k")
	if err != nil {
		t.Fatal(err)
	}
	r := rc.ReplicaOf(m.Options().Addr)
	if r == nil {
		t.Fatalf("no replica for master %s", m.Options().Addr)
	}
	rc.WaitReplicated(t)
	rd := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rd.Close()
	if err := rd.ReadOnly(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := rd.Get(ctx, "{x}:k").Result(); err != nil || v != "v" {
		t.Fatalf("replica %s GET = %q, %v; want v", r.Addr, v, err)
	}
}
