package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func TestRedisSetGet(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, addr := range map[string]func(t *testing.T) string{
		"own":    func(t *testing.T) string { return StartRedis(t, RedisOptions{}).Addr },
		"shared": func(t *testing.T) string { return SharedRedis(t) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := redis.NewClient(&redis.Options{Addr: addr(t)})
			defer c.Close()
			k := KeyPrefix(t) + ":k"
			if err := c.Set(ctx, k, "v", time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			if v, err := c.Get(ctx, k).Result(); err != nil || v != "v" {
				t.Fatalf("GET %s = %q, %v; want v", k, v, err)
			}
		})
	}
}

func TestRedisKillRestartKeepsAOF(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := StartRedis(t, RedisOptions{AOF: true, AppendFsync: "always"})
	addr, dir := r.Addr, r.Dir
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	r.Kill(t)
	if reply, err := rawPing(r.Addr); err == nil {
		t.Fatalf("server still answers %q after Kill", reply)
	}
	r.Kill(t) // killing a dead server does nothing

	r.Restart(t)
	if r.Addr != addr || r.Dir != dir {
		t.Fatalf("Restart moved the server from %s %s to %s %s", addr, dir, r.Addr, r.Dir)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("after restart GET k = %q, %v; want v", v, err)
	}
}

func TestSharedRedisCluster(t *testing.T) {
	t.Parallel()
	addrs := SharedRedisCluster(t)
	checkCluster(t, addrs)
	if again := SharedRedisCluster(t); strings.Join(again, ",") != strings.Join(addrs, ",") {
		t.Fatalf("second call: %v, first: %v", again, addrs)
	}
}

func TestStartRedisCluster(t *testing.T) {
	t.Parallel()
	addrs := StartRedisCluster(t)
	if shared := SharedRedisCluster(t); strings.Join(shared, ",") == strings.Join(addrs, ",") {
		t.Fatalf("own cluster %v is the shared one", addrs)
	}
	checkCluster(t, addrs)
}

// checkCluster writes 100 keys with different hash tags through a
// ClusterClient, reads them back, and checks that they spread over three
// masters, each of which knows three nodes (six with replicas).
func checkCluster(t *testing.T, addrs []string) {
	t.Helper()
	ctx := context.Background()
	if len(addrs) != 3 {
		t.Fatalf("got %d addrs, want 3", len(addrs))
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer c.Close()
	prefix := KeyPrefix(t)
	masters := map[string]int{}
	for i := 0; i < 100; i++ {
		k := fmt.Sprintf("{%s-%d}:k", prefix, i)
		if err := c.Set(ctx, k, i, time.Minute).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
		n, err := c.MasterForKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		masters[n.Options().Addr]++
	}
	for i := 0; i < 100; i++ {
		k := fmt.Sprintf("{%s-%d}:k", prefix, i)
		if v, err := c.Get(ctx, k).Int(); err != nil || v != i {
			t.Fatalf("GET %s = %d, %v; want %d", k, v, err, i)
		}
	}
	if len(masters) != 3 {
		t.Fatalf("keys landed on %v, want 3 masters", masters)
	}
	for _, a := range addrs {
		if masters[a] == 0 {
			t.Fatalf("no key on %s; keys per master: %v", a, masters)
		}
		n := redis.NewClient(&redis.Options{Addr: a})
		info, err := n.ClusterInfo(ctx).Result()
		n.Close()
		if err != nil {
			t.Fatal(err)
		}
		if known := infoField(info, "cluster_known_nodes"); (known != "3" && known != "6") || infoField(info, "cluster_state") != "ok" || infoField(info, "cluster_size") != "3" {
			t.Fatalf("CLUSTER INFO on %s:\n%s", a, info)
		}
	}
}

func TestMongo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	uri := Mongo(t)
	if again := Mongo(t); again != uri {
		t.Fatalf("second call: %s, first: %s", again, uri)
	}
	c, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(ctx)
	coll := c.Database(DBName(t)).Collection("c")
	defer coll.Database().Drop(ctx)

	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "n", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	var got struct {
		ID string `bson:"_id"`
		N  int    `bson:"n"`
	}
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "a"}}).Decode(&got); err != nil || got.ID != "a" || got.N != 1 {
		t.Fatalf("FindOne = %+v, %v; want {a 1}", got, err)
	}

	_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}})
	if !mongo.IsDuplicateKeyError(err) {
		t.Fatalf("duplicate InsertOne: %v, want a duplicate key error", err)
	}

	_, err = coll.InsertMany(ctx,
		[]any{bson.D{{Key: "_id", Value: "b"}}, bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "_id", Value: "c"}}},
		options.InsertMany().SetOrdered(false))
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) {
		t.Fatalf("unordered InsertMany with a duplicate: %T %v, want a BulkWriteException", err, err)
	}
	if len(bwe.WriteErrors) != 1 || bwe.WriteErrors[0].Index != 1 || bwe.WriteErrors[0].Code != 11000 {
		t.Fatalf("write errors %+v, want one with index 1, code 11000", bwe.WriteErrors)
	}
	if !mongo.IsDuplicateKeyError(err) {
		t.Errorf("mongo.IsDuplicateKeyError(%v) = false", err)
	}
	n, err := coll.CountDocuments(ctx, bson.D{})
	if err != nil || n != 3 {
		t.Fatalf("CountDocuments = %d, %v; want 3 (a, b, c)", n, err)
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	valid := regexp.MustCompile(`^[A-Za-z0-9_]{1,38}$`)
	for _, name := range []string{"plain", "with spaces/and.dots$and-dashes", strings.Repeat("long", 30), "ünïcödé"} {
		t.Run(name, func(t *testing.T) {
			a, b := DBName(t), DBName(t)
			if a == b || !valid.MatchString(a) || !valid.MatchString(b) {
				t.Fatalf("DBName: %q, %q", a, b)
			}
			p, q := KeyPrefix(t), KeyPrefix(t)
			if p == q || len(p) != 9 {
				t.Fatalf("KeyPrefix: %q, %q", p, q)
			}
		})
	}
}

func TestStartFailures(t *testing.T) {
	t.Run("busy port shows the log", func(t *testing.T) {
		SkipIfShort(t, "redis-server")
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		r := &RedisServer{Addr: ln.Addr().String(), Dir: t.TempDir(), port: port, opt: RedisOptions{AppendFsync: "everysec"}}
		err = r.launch()
		if err == nil {
			r.kill()
			t.Fatal("redis-server started on a busy port")
		}
		t.Logf("busy port: %v", err)
		if !strings.Contains(err.Error(), "Address already in use") || !strings.Contains(err.Error(), logName) {
			t.Fatalf("error lacks the log tail:\n%v", err)
		}
	})
	t.Run("bad fsync", func(t *testing.T) {
		if _, err := startRedis(RedisOptions{AppendFsync: "sometimes"}); err == nil || !strings.Contains(err.Error(), "sometimes") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("no redis-server", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		if _, err := startRedis(RedisOptions{}); err == nil || !strings.Contains(err.Error(), "apt-get install -y redis-server") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestFreePortsAvoidTheEphemeralRange: the ports handed to child servers
// are below the kernel's ephemeral range, where no outgoing connection
// can take them before the child binds, and free when handed out; a
// cluster port's bus port (port+10000) too.
func TestFreePortsAvoidTheEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	for _, cluster := range []bool{false, true} {
		for range 50 {
			port, err := freePort(cluster)
			if err != nil {
				t.Fatal(err)
			}
			top := port
			if cluster {
				top = port + 10000
			}
			if port < 10000 || top >= low {
				t.Fatalf("cluster=%v: port %d (highest used %d) not below the ephemeral range from %d", cluster, port, top, low)
			}
		}
	}
	a := FreeAddr(t)
	ln, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatalf("FreeAddr %s cannot be bound: %v", a, err)
	}
	ln.Close()
}
