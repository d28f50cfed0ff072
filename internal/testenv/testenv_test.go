package testenv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func TestRedisKillRestartKeepsAOF(t *testing.T) {
	ctx := context.Background()
	r := StartRedis(t, RedisOptions{AOF: true, AppendFsync: "always"})
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Kill(t)
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("redis still answers after Kill")
	}
	r.Restart(t)
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("after restart: %q, %v; want v", v, err)
	}
}

func TestSharedCluster(t *testing.T) {
	ctx := context.Background()
	addrs := SharedRedisCluster(t)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer c.Close()
	nodes := map[string]bool{}
	for i := 0; i < 100; i++ {
		k := fmt.Sprintf("{%s-%d}", KeyPrefix(t), i)
		if err := c.Set(ctx, k, i, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if v, err := c.Get(ctx, k).Int(); err != nil || v != i {
			t.Fatalf("get %s: %d, %v", k, v, err)
		}
		n, err := c.MasterForKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		nodes[n.Options().Addr] = true
	}
	if len(nodes) != 3 {
		t.Fatalf("keys landed on %d nodes, want 3", len(nodes))
	}
}

func TestMongo(t *testing.T) {
	ctx := context.Background()
	c, err := mongo.Connect(options.Client().ApplyURI(Mongo(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(ctx)
	coll := c.Database(DBName(t)).Collection("c")
	defer coll.Database().Drop(ctx)
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}}); !mongo.IsDuplicateKeyError(err) {
		t.Fatalf("duplicate insert: %v, want duplicate key error", err)
	}
	_, err = coll.InsertMany(ctx, []any{bson.D{{Key: "_id", Value: "b"}}, bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "_id", Value: "c"}}},
		options.InsertMany().SetOrdered(false))
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || len(bwe.WriteErrors) != 1 || bwe.WriteErrors[0].Index != 1 || bwe.WriteErrors[0].Code != 11000 {
		t.Fatalf("unordered insert with a duplicate: %v", err)
	}
	n, err := coll.CountDocuments(ctx, bson.D{})
	if err != nil || n != 3 {
		t.Fatalf("count = %d, %v; want 3", n, err)
	}
}

func TestNames(t *testing.T) {
	a, b := DBName(t), DBName(t)
	if a == b || len(a) > 38 || strings.ContainsAny(a, "/. ") {
		t.Fatalf("DBName: %q, %q", a, b)
	}
	if KeyPrefix(t) == KeyPrefix(t) {
		t.Fatal("KeyPrefix repeats")
	}
}
