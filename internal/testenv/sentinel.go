package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelOptions configure StartSentinelGroup. Zero values take the
// defaults noted.
type SentinelOptions struct {
	// MasterName is the name the Sentinels monitor (default "invitegate").
	MasterName string
	// AppendFsync of the primary and the replica, both with AOF on:
	// "always" (default), "everysec" or "no".
	AppendFsync string
	// DownAfter is how long a node must be unreachable before a Sentinel
	// thinks it down (down-after-milliseconds, default 1s).
	DownAfter time.Duration
	// FailoverTimeout is Sentinel's failover-timeout (default 3s); a failed
	// failover is retried after twice this.
	FailoverTimeout time.Duration
	// Password, when set, is required by the Sentinels themselves
	// (requirepass and sentinel-pass), not by the data nodes.
	Password string
	// InfoPeriod is how often a Sentinel sends INFO to the nodes it knows
	// (SENTINEL DEBUG info-period, default 1s; Redis' own is 10s), and
	// PublishPeriod how often it sends its hello messages (SENTINEL DEBUG
	// publish-period, default 500ms; Redis' own is 2s). A restarted old
	// primary is made the new primary's replica once a Sentinel has seen it
	// (INFO) reporting itself a primary for four publish periods: about 3 s
	// with these defaults, 8–18 s with Redis' own.
	InfoPeriod, PublishPeriod time.Duration
}

// sentinelConf is what a Sentinel's config file says.
type sentinelConf struct {
	master          string
	primary         string // host:port
	quorum          int
	downAfter       time.Duration
	failoverTimeout time.Duration
	password        string
}

// write creates the Sentinel's config file in dir unless it exists (the
// Sentinel rewrites it with what it learned, which a restart keeps) and
// returns its path.
func (s *sentinelConf) write(dir string, port int) (string, error) {
	path := filepath.Join(dir, "sentinel.conf")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	host, pport, err := net.SplitHostPort(s.primary)
	if err != nil {
		return "", err
	}
	lines := []string{
		"port " + strconv.Itoa(port),
		"bind 127.0.0.1",
		"protected-mode no",
		"daemonize no",
		`logfile ""`,
		"dir " + dir,
		fmt.Sprintf("sentinel monitor %s %s %s %d", s.master, host, pport, s.quorum),
		fmt.Sprintf("sentinel down-after-milliseconds %s %d", s.master, s.downAfter.Milliseconds()),
		fmt.Sprintf("sentinel failover-timeout %s %d", s.master, s.failoverTimeout.Milliseconds()),
		fmt.Sprintf("sentinel parallel-syncs %s 1", s.master),
	}
	if s.password != "" {
		lines = append(lines, "requirepass "+s.password, "sentinel sentinel-pass "+s.password)
	}
	return path, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

// sentinelGroupReadyTimeout bounds the start of a group: the Sentinels find
// each other by hello messages every 2 s.
const sentinelGroupReadyTimeout = 30 * time.Second

// SentinelGroup is a Redis primary with one replica, watched by three
// Sentinels (quorum 2), all child processes on loopback ports, started by
// StartSentinelGroup.
type SentinelGroup struct {
	// MasterName is the name the Sentinels know the primary by.
	MasterName string
	// Nodes are the data nodes: Nodes[0] started as the primary, Nodes[1]
	// as its replica. Which one is primary now is Primary's answer.
	Nodes []*RedisServer
	// Sentinels are the three Sentinel processes.
	Sentinels []*RedisServer

	password string
}

// StartSentinelGroup starts a primary and a replica (AOF on, appendfsync
// opt.AppendFsync) and three Sentinels monitoring them, and returns once
// the replica is in sync and every Sentinel knows the replica and the two
// other Sentinels, so a failover can happen. Every process is killed when
// the test ends. It fails the test if the group does not come up.
func StartSentinelGroup(tb testing.TB, opt SentinelOptions) *SentinelGroup {
	tb.Helper()
	SkipIfShort(tb, "a Redis primary, replica and three Sentinels")
	if opt.MasterName == "" {
		opt.MasterName = "invitegate"
	}
	if opt.AppendFsync == "" {
		opt.AppendFsync = "always"
	}
	if opt.DownAfter <= 0 {
		opt.DownAfter = time.Second
	}
	if opt.FailoverTimeout <= 0 {
		opt.FailoverTimeout = 3 * time.Second
	}
	if opt.InfoPeriod <= 0 {
		opt.InfoPeriod = time.Second
	}
	if opt.PublishPeriod <= 0 {
		opt.PublishPeriod = 500 * time.Millisecond
	}
	g := &SentinelGroup{MasterName: opt.MasterName, password: opt.Password}
	start := func(o RedisOptions) *RedisServer {
		tb.Helper()
		r, err := startRedis(o)
		if err != nil {
			tb.Fatalf("testenv: sentinel group: %v", err)
		}
		tb.Cleanup(func() { r.discard(tb) })
		return r
	}
	primary := start(RedisOptions{AOF: true, AppendFsync: opt.AppendFsync})
	replica := start(RedisOptions{AOF: true, AppendFsync: opt.AppendFsync, ReplicaOf: primary.Addr})
	g.Nodes = []*RedisServer{primary, replica}

	ctx, cancel := context.WithTimeout(context.Background(), sentinelGroupReadyTimeout)
	defer cancel()
	if err := poll(ctx, func() error { return replicaInSync(ctx, primary.Addr, replica.Addr) }); err != nil {
		tb.Fatalf("testenv: sentinel group: %v\n%s", err, replica.logTail())
	}
	// Started once the replica is attached, so each Sentinel's first INFO
	// of the primary already lists it.
	for range 3 {
		g.Sentinels = append(g.Sentinels, start(RedisOptions{sentinel: &sentinelConf{
			master: opt.MasterName, primary: primary.Addr, quorum: 2,
			downAfter: opt.DownAfter, failoverTimeout: opt.FailoverTimeout, password: opt.Password,
		}}))
	}
	for _, s := range g.Sentinels {
		c := redis.NewClient(&redis.Options{Addr: s.Addr, Password: opt.Password, DisableIdentity: true})
		err := c.Do(ctx, "SENTINEL", "DEBUG", "info-period", opt.InfoPeriod.Milliseconds(),
			"publish-period", opt.PublishPeriod.Milliseconds()).Err()
		c.Close()
		if err != nil {
			tb.Fatalf("testenv: sentinel %s: SENTINEL DEBUG: %v", s.Addr, err)
		}
	}
	if err := poll(ctx, func() error { return g.sentinelsAgree(ctx, primary.Addr, 1) }); err != nil {
		var tails []string
		for _, s := range g.Sentinels {
			tails = append(tails, s.logTail())
		}
		tb.Fatalf("testenv: sentinel group not ready after %v: %v\n%s", sentinelGroupReadyTimeout, err, strings.Join(tails, "\n"))
	}
	return g
}

// SentinelAddrs are the Sentinels' addresses (INVITEGATE_REDIS_ADDRS with
// INVITEGATE_REDIS_SENTINEL_MASTER).
func (g *SentinelGroup) SentinelAddrs() []string { return addrsOf(g.Sentinels) }

// sentinel returns a client of the Sentinel at addr.
func (g *SentinelGroup) sentinel(addr string) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: addr, Password: g.password, DisableIdentity: true, MaxRetries: -1})
}

// sentinelsAgree returns nil once every Sentinel names primary as the
// master, sees it up, and knows at least replicas replicas and the two
// other Sentinels.
func (g *SentinelGroup) sentinelsAgree(ctx context.Context, primary string, replicas int) error {
	for _, s := range g.Sentinels {
		c := g.sentinel(s.Addr)
		m, err := c.Master(ctx, g.MasterName).Result()
		c.Close()
		if err != nil {
			return fmt.Errorf("sentinel %s: SENTINEL MASTER: %w", s.Addr, err)
		}
		addr := net.JoinHostPort(m["ip"], m["port"])
		slaves, _ := strconv.Atoi(m["num-slaves"])
		others, _ := strconv.Atoi(m["num-other-sentinels"])
		switch {
		case addr != primary:
			return fmt.Errorf("sentinel %s names %s, want %s", s.Addr, addr, primary)
		case m["flags"] != "master":
			return fmt.Errorf("sentinel %s: master flags %q", s.Addr, m["flags"])
		case slaves < replicas:
			return fmt.Errorf("sentinel %s knows %d replicas, want %d", s.Addr, slaves, replicas)
		case others < len(g.Sentinels)-1:
			return fmt.Errorf("sentinel %s knows %d other sentinels, want %d", s.Addr, others, len(g.Sentinels)-1)
		}
	}
	return nil
}

// masterAddr asks the Sentinel at addr for the current primary.
func (g *SentinelGroup) masterAddr(ctx context.Context, addr string) (string, error) {
	c := g.sentinel(addr)
	defer c.Close()
	hp, err := c.GetMasterAddrByName(ctx, g.MasterName).Result()
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("sentinel %s: get-master-addr-by-name = %v", addr, hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// node returns the data node at addr, or nil.
func (g *SentinelGroup) node(addr string) *RedisServer {
	for _, n := range g.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// Primary returns the data node the first Sentinel that answers names as
// the primary. It fails the test if none answers within 5 s.
func (g *SentinelGroup) Primary(tb testing.TB) *RedisServer {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var p *RedisServer
	err := poll(ctx, func() error {
		var last error = errors.New("no sentinel")
		for _, s := range g.Sentinels {
			addr, err := g.masterAddr(ctx, s.Addr)
			if err != nil {
				last = err
				continue
			}
			if p = g.node(addr); p == nil {
				return fmt.Errorf("sentinels name %s, not a node of the group", addr)
			}
			return nil
		}
		return last
	})
	if err != nil {
		tb.Fatalf("testenv: primary of %s: %v", g.MasterName, err)
	}
	return p
}

// Replica returns a data node that is not the current primary.
func (g *SentinelGroup) Replica(tb testing.TB) *RedisServer {
	tb.Helper()
	p := g.Primary(tb)
	for _, n := range g.Nodes {
		if n != p {
			return n
		}
	}
	tb.Fatal("testenv: sentinel group has no replica")
	return nil
}

// WaitForPromotion polls the Sentinels until every one that answers names
// a primary other than old, and that node says it is a master; it returns
// the new primary, or fails the test after timeout. Kill or Pause old
// first: with the defaults a failover takes 2–5 s.
func (g *SentinelGroup) WaitForPromotion(tb testing.TB, old *RedisServer, timeout time.Duration) *RedisServer {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var p *RedisServer
	err := poll(ctx, func() error {
		answered := 0
		var named string
		for _, s := range g.Sentinels {
			addr, err := g.masterAddr(ctx, s.Addr)
			if err != nil {
				continue // a Sentinel may be down in the test
			}
			answered++
			if addr == old.Addr {
				return fmt.Errorf("sentinel %s still names %s", s.Addr, addr)
			}
			if named != "" && addr != named {
				return fmt.Errorf("sentinels disagree: %s and %s", named, addr)
			}
			named = addr
		}
		if answered == 0 {
			return errors.New("no sentinel answers")
		}
		if p = g.node(named); p == nil {
			return fmt.Errorf("sentinels name %s, not a node of the group", named)
		}
		c := redis.NewClient(&redis.Options{Addr: p.Addr, DisableIdentity: true, MaxRetries: -1})
		defer c.Close()
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if role := infoField(info, "role"); role != "master" {
			return fmt.Errorf("%s is named primary but has role %s", p.Addr, role)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("testenv: no promotion away from %s within %v: %v", old.Addr, timeout, err)
	}
	return p
}

// WaitReplicated waits until every data node other than the current
// primary has processed the primary's whole replication stream as of this
// call; it fails the test after 10 s.
func (g *SentinelGroup) WaitReplicated(tb testing.TB) {
	tb.Helper()
	p := g.Primary(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range g.Nodes {
		if n == p {
			continue
		}
		if err := poll(ctx, func() error { return replicaInSync(ctx, p.Addr, n.Addr) }); err != nil {
			tb.Fatalf("testenv: %v", err)
		}
	}
}

// KillReplicaLinks closes the server's connections to its replicas (CLIENT
// KILL TYPE replica): they reconnect and resynchronize, and meanwhile the
// writes it takes reach no replica. It returns how many it closed.
func (r *RedisServer) KillReplicaLinks(tb testing.TB) int {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr, DisableIdentity: true})
	defer c.Close()
	n, err := c.ClientKillByFilter(context.Background(), "TYPE", "replica").Result()
	if err != nil {
		tb.Fatalf("testenv: CLIENT KILL TYPE replica on %s: %v", r.Addr, err)
	}
	return int(n)
}
