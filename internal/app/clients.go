package app

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/invitegate/invitegate/internal/config"
)

// NewRedis returns a client for cfg: a cluster client with
// INVITEGATE_REDIS_CLUSTER, a failover client that follows the current
// primary of INVITEGATE_REDIS_SENTINEL_MASTER (the addresses are then the
// Sentinels'), a single-node client otherwise. Every command has a
// deadline, so a dead Redis turns into errors, not hung requests: the
// earlier of the request's own (INVITEGATE_REQUEST_TIMEOUT) and 2s, plus
// INVITEGATE_ACK_TIMEOUT with ack=replica, whose WAIT is read in the same
// round trip as the script.
func NewRedis(cfg config.Config, poolSize int) redis.UniversalClient {
	read := 2 * time.Second
	if cfg.Ack == config.AckReplica {
		read += cfg.AckTimeout
	}
	o := &redis.UniversalOptions{
		Addrs:            cfg.RedisAddrs,
		IsClusterMode:    cfg.RedisCluster,
		MasterName:       cfg.SentinelMaster,
		Password:         cfg.RedisPassword,
		SentinelPassword: cfg.SentinelPass,
		DialTimeout:      2 * time.Second,
		ReadTimeout:      read,
		WriteTimeout:     2 * time.Second,
		PoolSize:         poolSize,
		// A hung node holds a request only until its deadline.
		ContextTimeoutEnabled: true,
	}
	if cfg.RedisCluster {
		co := o.Cluster()
		// go-redis reloads the slot map on a MOVED, and otherwise only
		// every ClusterStateReloadInterval (60 s by default). A master that
		// died and stays dead answers no MOVED: its slots' commands fail
		// with a connection error until the periodic reload, so after its
		// replica took over, signups on its shards got 503 for up to a
		// minute (53–60 s measured, TestClusterFailover). One CLUSTER SLOTS
		// a second per client bounds that to about a second.
		co.ClusterStateReloadInterval = clusterReloadEvery
		return redis.NewClusterClient(co)
	}
	return redis.NewUniversalClient(o)
}

// clusterReloadEvery is how stale a cluster client's slot map may get
// without a MOVED (see NewRedis).
const clusterReloadEvery = time.Second

// warnIfEvicting logs a warning for every Redis primary whose
// maxmemory-policy is not noeviction: evicting a claim or a bucket could
// admit an email twice or a code past max_uses. Redis' default is
// noeviction. Services that refuse CONFIG GET (many managed ones) are not
// judged.
func warnIfEvicting(ctx context.Context, rdb redis.UniversalClient, log logrus.FieldLogger) {
	check := func(ctx context.Context, c *redis.Client) error {
		v, err := c.ConfigGet(ctx, "maxmemory-policy").Result()
		if err != nil {
			log.WithError(err).Debug("cannot read Redis' maxmemory-policy")
			return nil
		}
		if p, ok := v["maxmemory-policy"]; ok && p != "noeviction" {
			log.WithFields(logrus.Fields{"redis": nodeAddr(ctx, c), "maxmemory_policy": p}).
				Warn("Redis may evict keys when full (maxmemory-policy is not noeviction): an evicted claim or counter can admit an email twice or a code past max_uses; set maxmemory-policy noeviction")
		}
		return nil
	}
	eachPrimary(ctx, rdb, check)
}

// warnIfFewReplicas logs a warning for every Redis primary with fewer
// replicas connected than INVITEGATE_ACK_REPLICAS (ack=replica): until
// enough are back, every signup is answered 503 after
// INVITEGATE_ACK_TIMEOUT.
func warnIfFewReplicas(ctx context.Context, rdb redis.UniversalClient, want int, log logrus.FieldLogger) {
	check := func(ctx context.Context, c *redis.Client) error {
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			log.WithError(err).Debug("cannot read Redis' replication state")
			return nil
		}
		n := 0
		for _, line := range strings.Split(info, "\n") {
			if strings.HasPrefix(line, "slave") && strings.Contains(line, "state=online") {
				n++
			}
		}
		if n < want {
			log.WithFields(logrus.Fields{"redis": nodeAddr(ctx, c), "replicas_online": n, "ack_replicas": want}).
				Warn("INVITEGATE_ACK=replica, but this Redis primary has fewer replicas online than INVITEGATE_ACK_REPLICAS: its signups are answered 503 until enough replicas are back")
		}
		return nil
	}
	eachPrimary(ctx, rdb, check)
}

// eachPrimary runs check on every primary of rdb (one, or a cluster's
// masters) within a 2 s bound; check logs what it finds.
func eachPrimary(ctx context.Context, rdb redis.UniversalClient, check func(context.Context, *redis.Client) error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		_ = c.ForEachMaster(ctx, check)
	case *redis.Client:
		_ = check(ctx, c)
	}
}

// nodeAddr names the Redis node c talks to: its address as the node sees
// it (CLIENT INFO laddr), since a client following Sentinel knows itself
// only as "FailoverClient"; the configured address if the node cannot say.
func nodeAddr(ctx context.Context, c *redis.Client) string {
	if info, err := c.ClientInfo(ctx).Result(); err == nil && info.LAddr != "" {
		return info.LAddr
	}
	return c.Options().Addr
}

// autoPipeline returns rdb's shared deferred-face autopipeliner with
// go-redis' defaults (one ordered batch in flight per node, up to 200
// commands a batch, no waiting for more: a lone command goes out at once),
// holding at most maxQueued commands. A caller gives up at its deadline but
// its queued command stays; the bound keeps a hung Redis from collecting
// more than a replica's in-flight signups, and past it a call fails at
// once (503). It is closed with rdb.
func autoPipeline(rdb redis.UniversalClient, maxQueued int) (*redis.AutoPipeliner, error) {
	opt := redis.DefaultAutoPipelineOptions()
	if maxQueued <= 0 {
		maxQueued = 512
	}
	opt.MaxQueuedCommands = maxQueued
	switch c := rdb.(type) {
	case *redis.Client:
		return c.AsyncAutoPipelineWithOptions(opt)
	case *redis.ClusterClient:
		return c.AsyncAutoPipelineWithOptions(opt)
	}
	return nil, fmt.Errorf("no autopipelining for %T", rdb)
}

// NewMongo returns a MongoDB client for cfg; it connects lazily.
func NewMongo(cfg config.Config) (*mongo.Client, error) {
	c, err := mongo.Connect(options.Client().ApplyURI(cfg.MongoURI).
		SetServerSelectionTimeout(3 * time.Second).
		SetConnectTimeout(3 * time.Second).
		SetTimeout(10 * time.Second))
	if err != nil {
		return nil, fmt.Errorf("mongodb: %w", err)
	}
	return c, nil
}

// NewLogger returns the process logger for cfg.
func NewLogger(cfg config.Config) *logrus.Logger {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	lvl, _ := logrus.ParseLevel(cfg.LogLevel)
	l.SetLevel(lvl)
	if cfg.LogFormat == "text" {
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	} else {
		l.SetFormatter(&logrus.JSONFormatter{})
	}
	return l
}
