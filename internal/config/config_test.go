package config

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadDefaults(t *testing.T) {
	c, err := Load("t", nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != ":8080" || c.AdminAddr != ":9090" || c.MongoDB != "invitegate" || c.Shards != 1 ||
		len(c.RedisAddrs) != 1 || c.RedisCluster || !c.Reconciler || c.RequestTimeout != 3*time.Second {
		t.Fatalf("defaults = %+v", c)
	}
}

func TestLoadEnvThenFlags(t *testing.T) {
	e := env(map[string]string{
		"INVITEGATE_HTTP_ADDR":     "127.0.0.1:1234",
		"INVITEGATE_REDIS_ADDRS":   "a:1, b:2 ,c:3",
		"INVITEGATE_REDIS_CLUSTER": "true",
		"INVITEGATE_SHARDS":        "16",
	})
	c, err := Load("t", []string{"--shards", "32", "--http-addr=:80"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Shards != 32 || c.HTTPAddr != ":80" || strings.Join(c.RedisAddrs, ",") != "a:1,b:2,c:3" || !c.RedisCluster {
		t.Fatalf("got %+v", c)
	}
}

func TestLoadRejectsBadValues(t *testing.T) {
	tests := []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"INVITEGATE_SHARDS": "many"}, nil, "INVITEGATE_SHARDS"},
		{map[string]string{"INVITEGATE_SHARDS": "0"}, nil, "INVITEGATE_SHARDS"},
		{map[string]string{"INVITEGATE_SHARDS": "2000"}, nil, "INVITEGATE_SHARDS"},
		{map[string]string{"INVITEGATE_REDIS_CLUSTER": "yes please"}, nil, "INVITEGATE_REDIS_CLUSTER"},
		{map[string]string{"INVITEGATE_HTTP_ADDR": "8080"}, nil, "INVITEGATE_HTTP_ADDR"},
		{map[string]string{"INVITEGATE_REDIS_ADDRS": "a:1,b:2"}, nil, "INVITEGATE_REDIS_CLUSTER"},
		{map[string]string{"INVITEGATE_REDIS_ADDRS": ","}, nil, "INVITEGATE_REDIS_ADDRS"},
		{map[string]string{"INVITEGATE_MONGO_URI": "http://x"}, nil, "INVITEGATE_MONGO_URI"},
		{map[string]string{"INVITEGATE_MONGO_DB": "a.b"}, nil, "INVITEGATE_MONGO_DB"},
		{map[string]string{"INVITEGATE_REQUEST_TIMEOUT": "soon"}, nil, "INVITEGATE_REQUEST_TIMEOUT"},
		{map[string]string{"INVITEGATE_LOG_LEVEL": "loud"}, nil, "INVITEGATE_LOG_LEVEL"},
		{map[string]string{"INVITEGATE_LOG_FORMAT": "xml"}, nil, "INVITEGATE_LOG_FORMAT"},
		{map[string]string{"INVITEGATE_REDIS_NAMESPACE": "a{b}"}, nil, "INVITEGATE_REDIS_NAMESPACE"},
		{map[string]string{"INVITEGATE_ACK": "disk"}, nil, "INVITEGATE_ACK"},
		{map[string]string{"INVITEGATE_ACK": "replica", "INVITEGATE_RESERVER": "mongo"}, nil, "INVITEGATE_RESERVER=mongo"},
		{map[string]string{"INVITEGATE_ACK": "replica", "INVITEGATE_ACK_REPLICAS": "0"}, nil, "INVITEGATE_ACK_REPLICAS"},
		{map[string]string{"INVITEGATE_ACK_REPLICAS": "many"}, nil, "INVITEGATE_ACK_REPLICAS"},
		{map[string]string{"INVITEGATE_ACK": "replica", "INVITEGATE_ACK_TIMEOUT": "1m"}, nil, "INVITEGATE_ACK_TIMEOUT"},
		{map[string]string{"INVITEGATE_ACK_TIMEOUT": "later"}, nil, "INVITEGATE_ACK_TIMEOUT"},
		{map[string]string{"INVITEGATE_ACK_TIMEOUT": "0s"}, nil, "INVITEGATE_ACK_TIMEOUT"},
		{map[string]string{"INVITEGATE_MAX_IN_FLIGHT": "-1"}, nil, "INVITEGATE_MAX_IN_FLIGHT"},
		{map[string]string{"INVITEGATE_RATE_LIMIT": "10"}, nil, "INVITEGATE_RATE_LIMIT"},
		{map[string]string{"INVITEGATE_RATE_LIMIT": "0/s"}, nil, "INVITEGATE_RATE_LIMIT"},
		{map[string]string{"INVITEGATE_RATE_LIMIT": "5/day"}, nil, "INVITEGATE_RATE_LIMIT"},
		{map[string]string{"INVITEGATE_TRUSTED_PROXIES": "10.0.0.0/8,proxy.local"}, nil, "INVITEGATE_TRUSTED_PROXIES"},
		{map[string]string{"INVITEGATE_CLIENT_IP_HEADER": "X Real"}, nil, "INVITEGATE_CLIENT_IP_HEADER"},
		{map[string]string{"INVITEGATE_HTTP_READ_TIMEOUT": "1ms"}, nil, "INVITEGATE_HTTP_READ_TIMEOUT"},
		{nil, []string{"--shards", "x"}, "shards"},
		{nil, []string{"--nope"}, "nope"},
		{nil, []string{"extra"}, "unexpected"},
	}
	for _, tt := range tests {
		_, err := Load("t", tt.args, env(tt.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("env %v args %v: err = %v, want mention of %s", tt.env, tt.args, err, tt.want)
		}
	}
}

// TestRedisTopology: one node, a cluster, or Sentinels following a
// primary; the settings that say which, and the combinations refused.
func TestRedisTopology(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string // "" accepted, else a part of the error
	}{
		{"one node", map[string]string{"INVITEGATE_REDIS_ADDRS": "r:6379"}, ""},
		{"cluster seeds", map[string]string{"INVITEGATE_REDIS_ADDRS": "a:1,b:2", "INVITEGATE_REDIS_CLUSTER": "true"}, ""},
		{"sentinels", map[string]string{"INVITEGATE_REDIS_ADDRS": "s1:26379,s2:26379,s3:26379", "INVITEGATE_REDIS_SENTINEL_MASTER": "invitegate"}, ""},
		{"one sentinel", map[string]string{"INVITEGATE_REDIS_ADDRS": "s1:26379", "INVITEGATE_REDIS_SENTINEL_MASTER": "invitegate"}, ""},
		{"sentinels with a password", map[string]string{"INVITEGATE_REDIS_ADDRS": "s1:26379", "INVITEGATE_REDIS_SENTINEL_MASTER": "m", "INVITEGATE_REDIS_SENTINEL_PASSWORD": "pw"}, ""},
		{"several without cluster or sentinel", map[string]string{"INVITEGATE_REDIS_ADDRS": "a:1,b:2"}, "several addresses need INVITEGATE_REDIS_CLUSTER=true"},
		{"sentinel and cluster", map[string]string{"INVITEGATE_REDIS_ADDRS": "a:1", "INVITEGATE_REDIS_SENTINEL_MASTER": "m", "INVITEGATE_REDIS_CLUSTER": "true"}, "exclude each other"},
		{"sentinel password alone", map[string]string{"INVITEGATE_REDIS_SENTINEL_PASSWORD": "pw"}, "without INVITEGATE_REDIS_SENTINEL_MASTER"},
		{"master name with a space", map[string]string{"INVITEGATE_REDIS_SENTINEL_MASTER": "my master"}, "INVITEGATE_REDIS_SENTINEL_MASTER"},
		{"sentinel address without port", map[string]string{"INVITEGATE_REDIS_ADDRS": "s1", "INVITEGATE_REDIS_SENTINEL_MASTER": "m"}, "want host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load("t", nil, env(tt.env), io.Discard)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("err = %v, want mention of %q", err, tt.want)
			case tt.want == "" && c.SentinelMaster != tt.env["INVITEGATE_REDIS_SENTINEL_MASTER"]:
				t.Fatalf("master %q", c.SentinelMaster)
			}
		})
	}
}

// TestAckModes: each acknowledgement mode and INVITEGATE_ACK_TIMEOUT's
// default for it; an explicit timeout wins.
func TestAckModes(t *testing.T) {
	tests := []struct {
		env      map[string]string
		ack      string
		timeout  time.Duration
		replicas int
	}{
		{nil, AckRedis, DefaultAckTimeoutMongo, 1},
		{map[string]string{"INVITEGATE_ACK": "mongo"}, AckMongo, 2 * time.Second, 1},
		{map[string]string{"INVITEGATE_ACK": "replica"}, AckReplica, 500 * time.Millisecond, 1},
		{map[string]string{"INVITEGATE_ACK": "replica", "INVITEGATE_ACK_REPLICAS": "2", "INVITEGATE_ACK_TIMEOUT": "250ms"}, AckReplica, 250 * time.Millisecond, 2},
		{map[string]string{"INVITEGATE_ACK": "mongo", "INVITEGATE_ACK_TIMEOUT": "auto"}, AckMongo, 2 * time.Second, 1},
	}
	for _, tt := range tests {
		c, err := Load("t", nil, env(tt.env), io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", tt.env, err)
		}
		if c.Ack != tt.ack || c.AckTimeout != tt.timeout || c.AckReplicas != tt.replicas {
			t.Errorf("%v: ack %q, timeout %v, replicas %d; want %q, %v, %d", tt.env, c.Ack, c.AckTimeout, c.AckReplicas, tt.ack, tt.timeout, tt.replicas)
		}
	}
	c, err := Load("t", []string{"--ack=replica", "--ack-timeout=750ms"}, env(nil), io.Discard)
	if err != nil || c.AckTimeout != 750*time.Millisecond || c.Fields()["INVITEGATE_ACK_TIMEOUT"] != "750ms" {
		t.Fatalf("flags: %v, %v, logged %v", err, c.AckTimeout, c.Fields()["INVITEGATE_ACK_TIMEOUT"])
	}
}

func TestRateLimitAndProxies(t *testing.T) {
	c, err := Load("t", nil, env(map[string]string{
		"INVITEGATE_RATE_LIMIT": "30/m", "INVITEGATE_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7, ::1",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := c.Limit()
	if l.Rate != 30 || l.Period != time.Minute || l.Burst != 30 {
		t.Fatalf("limit %+v", l)
	}
	c.RateBurst = 5
	if l, _ = c.Limit(); l.Burst != 5 {
		t.Fatalf("burst %d, want 5", l.Burst)
	}
	p, _ := c.TrustedPrefixes()
	if fmt.Sprint(p) != "[10.0.0.0/8 192.168.1.7/32 ::1/128]" {
		t.Fatalf("proxies %v", p)
	}
	c.RateLimit = ""
	if l, _ = c.Limit(); !l.IsZero() {
		t.Fatalf("empty rate limit = %+v, want off", l)
	}
}

func TestFieldsMaskSecrets(t *testing.T) {
	c, err := Load("t", nil, env(map[string]string{
		"INVITEGATE_MONGO_URI":               "mongodb://user:hunter2@db:27017/?authSource=admin",
		"INVITEGATE_REDIS_PASSWORD":          "s3cret",
		"INVITEGATE_REDIS_SENTINEL_MASTER":   "m",
		"INVITEGATE_REDIS_SENTINEL_PASSWORD": "s3cret",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	f := c.Fields()
	for k, v := range f {
		s, _ := v.(string)
		if strings.Contains(s, "hunter2") || strings.Contains(s, "s3cret") {
			t.Fatalf("%s leaks a secret: %q", k, s)
		}
	}
	if !strings.Contains(f["INVITEGATE_MONGO_URI"].(string), "user") {
		t.Fatalf("mongo uri lost its user: %v", f["INVITEGATE_MONGO_URI"])
	}
}

// TestREADMEListsEverySetting keeps the README's configuration table in
// step with the settings: each variable and its flag must be in it.
func TestREADMEListsEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range settings {
		row := "| `" + o.env + "` |"
		i := strings.Index(string(b), row)
		if i < 0 {
			t.Errorf("README's configuration table has no row for %s", o.env)
			continue
		}
		line := string(b[i:])
		line = line[:strings.IndexByte(line, '\n')]
		if !strings.Contains(line, "`--"+o.flag+"`") {
			t.Errorf("README's row for %s does not name --%s", o.env, o.flag)
		}
	}
}
