// Package config owns invitegate's configuration: every setting's
// INVITEGATE_* environment variable, flag, default and help (one table),
// strict parsing and validation, the reservation and acknowledgement modes,
// the values derived from settings (SMTP, rate limit, trusted proxies), and
// the masked form that processes log at start.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/confirm"
	"github.com/invitegate/invitegate/internal/mail"
	"github.com/invitegate/invitegate/internal/reserve"
)

// Config is the whole configuration of invitegate's processes. Every field
// comes from an INVITEGATE_* environment variable, overridden by a flag of
// the same name in kebab case (INVITEGATE_HTTP_ADDR -> --http-addr).
type Config struct {
	HTTPAddr        string
	AdminAddr       string
	RedisAddrs      []string
	RedisCluster    bool
	RedisPassword   string
	SentinelMaster  string
	SentinelPass    string
	RedisNamespace  string
	MongoURI        string
	MongoDB         string
	Shards          int
	StripPlusAll    bool
	Reconciler      bool
	RequestTimeout  time.Duration
	UnknownCodeTTL  time.Duration
	ShutdownGrace   time.Duration
	ShutdownTimeout time.Duration
	LogLevel        string
	LogFormat       string

	Reserver       string
	Ack            string
	AckTimeout     time.Duration
	AckReplicas    int
	ClaimIdle      time.Duration
	MaxInFlight    int
	MaxConns       int
	ReadTimeout    time.Duration
	IdleTimeout    time.Duration
	RateLimit      string
	RateBurst      int
	TrustedProxies []string
	ClientIPHeader string
	BlockedDomains string
	HideEmailTaken bool
	Pprof          bool
	RedisPipeline  bool
	LandingPage    bool
	GameName       string
	CORSOrigins    []string
	Mailer         bool
	SMTPAddr       string
	SMTPUsername   string
	SMTPPassword   string
	SMTPTLS        string
	MailFrom       string
	MailAttempts   int
	PublicURL      string
	ConfirmSecret  string
}

// Reservation paths (INVITEGATE_RESERVER).
const (
	ReserverRedis = "redis"
	ReserverMongo = "mongo"
)

// Acknowledgement modes (INVITEGATE_ACK).
const (
	AckRedis   = "redis"   // answer once Redis holds the reservation
	AckReplica = "replica" // answer once Redis' replicas hold it too (WAIT)
	AckMongo   = "mongo"   // answer once MongoDB holds it
)

// The default of INVITEGATE_ACK_TIMEOUT by mode. MongoDB's majority write
// goes through a group commit and a replica set's round trips; Redis'
// WAIT needs one round trip from primary to replica, so half a second is
// far above a healthy replica's lag and short enough that a signup whose
// replica is gone is answered 503 soon.
const (
	DefaultAckTimeoutMongo   = 2 * time.Second
	DefaultAckTimeoutReplica = 500 * time.Millisecond
)

// option is one configuration setting: its env variable, flag, default and
// help, bound to a Config field through flag.Value.
type option struct {
	env, flag, def, help string
	bind                 func(*Config) flag.Value
}

var settings = []option{
	{"INVITEGATE_HTTP_ADDR", "http-addr", ":8080", "public API listen address", func(c *Config) flag.Value { return (*strVal)(&c.HTTPAddr) }},
	{"INVITEGATE_ADMIN_ADDR", "admin-addr", ":9090", "admin listener (/livez, /readyz, /metrics)", func(c *Config) flag.Value { return (*strVal)(&c.AdminAddr) }},
	{"INVITEGATE_REDIS_ADDRS", "redis-addrs", "127.0.0.1:6379", "comma-separated Redis host:port list (cluster seed nodes with --redis-cluster, the Sentinels with --redis-sentinel-master)", func(c *Config) flag.Value { return (*listVal)(&c.RedisAddrs) }},
	{"INVITEGATE_REDIS_CLUSTER", "redis-cluster", "false", "talk to Redis Cluster instead of one node", func(c *Config) flag.Value { return (*boolVal)(&c.RedisCluster) }},
	{"INVITEGATE_REDIS_PASSWORD", "redis-password", "", "Redis password (secret)", func(c *Config) flag.Value { return (*strVal)(&c.RedisPassword) }},
	{"INVITEGATE_REDIS_SENTINEL_MASTER", "redis-sentinel-master", "", "the master name the Sentinels in --redis-addrs monitor: follow its current primary (empty: no Sentinel)", func(c *Config) flag.Value { return (*strVal)(&c.SentinelMaster) }},
	{"INVITEGATE_REDIS_SENTINEL_PASSWORD", "redis-sentinel-password", "", "password of the Sentinels themselves, if they require one (secret; the data nodes use --redis-password)", func(c *Config) flag.Value { return (*strVal)(&c.SentinelPass) }},
	{"INVITEGATE_REDIS_NAMESPACE", "redis-namespace", reserve.DefaultNamespace, "prefix of every Redis key (carries the key-schema version)", func(c *Config) flag.Value { return (*strVal)(&c.RedisNamespace) }},
	{"INVITEGATE_MONGO_URI", "mongo-uri", "mongodb://127.0.0.1:27017", "MongoDB connection string (credentials are masked in logs)", func(c *Config) flag.Value { return (*strVal)(&c.MongoURI) }},
	{"INVITEGATE_MONGO_DB", "mongo-db", "invitegate", "MongoDB database name", func(c *Config) flag.Value { return (*strVal)(&c.MongoDB) }},
	{"INVITEGATE_SHARDS", "shards", "1", "K, the number of reservation shards (1..1024); fixed for the life of a deployment", func(c *Config) flag.Value { return (*intVal)(&c.Shards) }},
	{"INVITEGATE_EMAIL_STRIP_PLUS", "email-strip-plus", "false", "treat name+tag@any.domain as name@any.domain for uniqueness (Gmail always is)", func(c *Config) flag.Value { return (*boolVal)(&c.StripPlusAll) }},
	{"INVITEGATE_RECONCILER", "reconciler", "true", "run the reconciler inside serve", func(c *Config) flag.Value { return (*boolVal)(&c.Reconciler) }},
	{"INVITEGATE_REQUEST_TIMEOUT", "request-timeout", "3s", "deadline for one signup's Redis and MongoDB work; past it the answer is 503", func(c *Config) flag.Value { return (*durVal)(&c.RequestTimeout) }},
	{"INVITEGATE_UNKNOWN_CODE_TTL", "unknown-code-ttl", "2s", "how long an unknown code is remembered before MongoDB is asked again", func(c *Config) flag.Value { return (*durVal)(&c.UnknownCodeTTL) }},
	{"INVITEGATE_SHUTDOWN_GRACE", "shutdown-grace", "5s", "after SIGTERM, time to stay up not-ready so the balancer notices", func(c *Config) flag.Value { return (*durVal)(&c.ShutdownGrace) }},
	{"INVITEGATE_SHUTDOWN_TIMEOUT", "shutdown-timeout", "20s", "bound on draining requests and the reconciler's batch after the grace period", func(c *Config) flag.Value { return (*durVal)(&c.ShutdownTimeout) }},
	{"INVITEGATE_LOG_LEVEL", "log-level", "info", "debug, info, warn or error", func(c *Config) flag.Value { return (*strVal)(&c.LogLevel) }},
	{"INVITEGATE_LOG_FORMAT", "log-format", "json", "json or text", func(c *Config) flag.Value { return (*strVal)(&c.LogFormat) }},
	{"INVITEGATE_RESERVER", "reserver", ReserverRedis, "where seats are taken: redis (the design) or mongo (MongoDB alone, for small deployments without Redis; fixed per deployment)", func(c *Config) flag.Value { return (*strVal)(&c.Reserver) }},
	{"INVITEGATE_ACK", "ack", AckRedis, "when a signup is acknowledged: redis (once Redis holds it), replica (once --ack-replicas Redis replicas do, by WAIT) or mongo (once MongoDB does)", func(c *Config) flag.Value { return (*strVal)(&c.Ack) }},
	{"INVITEGATE_ACK_TIMEOUT", "ack-timeout", autoValue, "with --ack=mongo or replica, the longest a signup waits for MongoDB or the replicas before the answer is 503 (auto: 2s with mongo, 500ms with replica)", func(c *Config) flag.Value { return (*autoDurVal)(&c.AckTimeout) }},
	{"INVITEGATE_ACK_REPLICAS", "ack-replicas", "1", "with --ack=replica, how many Redis replicas must hold a signup before it is answered", func(c *Config) flag.Value { return (*intVal)(&c.AckReplicas) }},
	{"INVITEGATE_RECONCILER_CLAIM_IDLE", "reconciler-claim-idle", "15s", "how long a reservation read by a dead consumer waits before another reconciler takes it over", func(c *Config) flag.Value { return (*durVal)(&c.ClaimIdle) }},
	{"INVITEGATE_MAX_IN_FLIGHT", "max-in-flight", "512", "signups worked on at once per process; past it, an immediate 503 (0: no bound)", func(c *Config) flag.Value { return (*intVal)(&c.MaxInFlight) }},
	{"INVITEGATE_MAX_CONNS", "max-conns", "4096", "open connections to the public listener; more wait in the kernel's backlog (0: no bound)", func(c *Config) flag.Value { return (*intVal)(&c.MaxConns) }},
	{"INVITEGATE_HTTP_READ_TIMEOUT", "http-read-timeout", "5s", "time a client has to send its request headers and body", func(c *Config) flag.Value { return (*durVal)(&c.ReadTimeout) }},
	{"INVITEGATE_HTTP_IDLE_TIMEOUT", "http-idle-timeout", "60s", "how long an idle keep-alive connection is kept", func(c *Config) flag.Value { return (*durVal)(&c.IdleTimeout) }},
	{"INVITEGATE_RATE_LIMIT", "rate-limit", "", "signup attempts per client, as N/s, N/m or N/h (empty: off)", func(c *Config) flag.Value { return (*strVal)(&c.RateLimit) }},
	{"INVITEGATE_RATE_BURST", "rate-burst", "0", "attempts a client may make at once before the rate applies (0: N of the rate)", func(c *Config) flag.Value { return (*intVal)(&c.RateBurst) }},
	{"INVITEGATE_TRUSTED_PROXIES", "trusted-proxies", "", "comma-separated IPs or CIDRs of proxies whose client-IP header is believed (empty: none)", func(c *Config) flag.Value { return (*listVal)(&c.TrustedProxies) }},
	{"INVITEGATE_CLIENT_IP_HEADER", "client-ip-header", "X-Forwarded-For", "header carrying the client's IP, read only from trusted proxies", func(c *Config) flag.Value { return (*strVal)(&c.ClientIPHeader) }},
	{"INVITEGATE_BLOCKED_DOMAINS_FILE", "blocked-domains-file", "", "file of email domains to refuse, one per line, # comments (empty: none)", func(c *Config) flag.Value { return (*strVal)(&c.BlockedDomains) }},
	{"INVITEGATE_HIDE_EMAIL_TAKEN", "hide-email-taken", "false", "answer an email used on another invitation like a repeat (200) instead of 409, hiding which invitation it used", func(c *Config) flag.Value { return (*boolVal)(&c.HideEmailTaken) }},
	{"INVITEGATE_LANDING_PAGE", "landing-page", "true", "serve the built-in landing page at GET /invitations/{code} and the confirm page at GET /invitations/{code}/confirm (false: POST only)", func(c *Config) flag.Value { return (*boolVal)(&c.LandingPage) }},
	{"INVITEGATE_GAME_NAME", "game-name", "Our Super Game", "the game's name, the landing page's title", func(c *Config) flag.Value { return (*strVal)(&c.GameName) }},
	{"INVITEGATE_CORS_ORIGINS", "cors-origins", "", "comma-separated origins (https://host[:port]) whose pages may call the API from a browser (empty: same origin only)", func(c *Config) flag.Value { return (*listVal)(&c.CORSOrigins) }},
	{"INVITEGATE_MAILER", "mailer", "true", "send the further-instructions emails from serve too (with INVITEGATE_SMTP_ADDR); invitegate mail sends them alone", func(c *Config) flag.Value { return (*boolVal)(&c.Mailer) }},
	{"INVITEGATE_SMTP_ADDR", "smtp-addr", "", "SMTP server host:port for the further-instructions emails (empty: no email is sent; they wait as pending)", func(c *Config) flag.Value { return (*strVal)(&c.SMTPAddr) }},
	{"INVITEGATE_SMTP_USERNAME", "smtp-username", "", "SMTP user (empty: no authentication)", func(c *Config) flag.Value { return (*strVal)(&c.SMTPUsername) }},
	{"INVITEGATE_SMTP_PASSWORD", "smtp-password", "", "SMTP password (masked in logs)", func(c *Config) flag.Value { return (*strVal)(&c.SMTPPassword) }},
	{"INVITEGATE_SMTP_TLS", "smtp-tls", "starttls", "starttls (required), tls (implicit, port 465) or none (a local catcher such as Mailpit)", func(c *Config) flag.Value { return (*strVal)(&c.SMTPTLS) }},
	{"INVITEGATE_MAIL_FROM", "mail-from", "Our Super Game <beta@our-super-game.io>", "sender of the emails", func(c *Config) flag.Value { return (*strVal)(&c.MailFrom) }},
	{"INVITEGATE_MAIL_MAX_ATTEMPTS", "mail-max-attempts", "8", "delivery attempts per email before it is given up (backoff 30 s doubling, at most 1 h between)", func(c *Config) flag.Value { return (*intVal)(&c.MailAttempts) }},
	{"INVITEGATE_PUBLIC_URL", "public-url", "", "the service's address as people reach it (https://beta.our-super-game.io): confirmation links start with it; required once an invitation has a confirmation window", func(c *Config) flag.Value { return (*strVal)(&c.PublicURL) }},
	{"INVITEGATE_CONFIRM_SECRET", "confirm-secret", "", "secret of at least 32 characters sealing the confirmation links' tokens, the same on every replica (e.g. `openssl rand -hex 32`; masked in logs); empty: a secret generated once and kept in MongoDB's settings", func(c *Config) flag.Value { return (*strVal)(&c.ConfirmSecret) }},
	{"INVITEGATE_REDIS_PIPELINE", "redis-pipeline", "true", "coalesce concurrent signups' Redis calls into pipelined round trips (go-redis autopipelining); false: one round trip each", func(c *Config) flag.Value { return (*boolVal)(&c.RedisPipeline) }},
	{"INVITEGATE_PPROF", "pprof", "false", "serve Go's profiler (net/http/pprof) on the admin listener under /debug/pprof/", func(c *Config) flag.Value { return (*boolVal)(&c.Pprof) }},
}

// Load builds a Config from defaults, then getenv, then args (flags),
// and validates it. Every bad value is an error naming the variable or
// flag; nothing is silently replaced by a default.
func Load(name string, args []string, getenv func(string) string, usage io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(usage)
	for _, o := range settings {
		v := o.bind(&c)
		if err := v.Set(o.def); err != nil {
			panic(fmt.Sprintf("bad default for %s: %v", o.env, err))
		}
		fs.Var(v, o.flag, fmt.Sprintf("%s (env %s, default %q)", o.help, o.env, o.def))
	}
	for _, o := range settings {
		if s := getenv(o.env); s != "" {
			if err := o.bind(&c).Set(s); err != nil {
				return c, fmt.Errorf("%s=%q: %w", o.env, s, err)
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if c.AckTimeout == autoDuration {
		c.AckTimeout = DefaultAckTimeoutMongo
		if c.Ack == AckReplica {
			c.AckTimeout = DefaultAckTimeoutReplica
		}
	}
	return c, c.Validate()
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	for _, a := range []struct{ name, addr string }{{"INVITEGATE_HTTP_ADDR", c.HTTPAddr}, {"INVITEGATE_ADMIN_ADDR", c.AdminAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("%s=%q: want host:port: %w", a.name, a.addr, err)
		}
	}
	if len(c.RedisAddrs) == 0 {
		return errors.New("INVITEGATE_REDIS_ADDRS: at least one address is required")
	}
	for _, a := range c.RedisAddrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("INVITEGATE_REDIS_ADDRS: %q: want host:port: %w", a, err)
		}
	}
	switch {
	case c.SentinelMaster != "" && c.RedisCluster:
		return errors.New("INVITEGATE_REDIS_SENTINEL_MASTER and INVITEGATE_REDIS_CLUSTER=true exclude each other: Redis Cluster fails over by itself, Sentinel watches one primary and its replicas")
	case c.SentinelMaster != "" && strings.ContainsAny(c.SentinelMaster, " \t\r\n"):
		return fmt.Errorf("INVITEGATE_REDIS_SENTINEL_MASTER=%q: a master name has no spaces", c.SentinelMaster)
	case c.SentinelMaster == "" && c.SentinelPass != "":
		return errors.New("INVITEGATE_REDIS_SENTINEL_PASSWORD is set without INVITEGATE_REDIS_SENTINEL_MASTER: it is the Sentinels' password")
	case c.SentinelMaster == "" && !c.RedisCluster && len(c.RedisAddrs) > 1:
		return errors.New("INVITEGATE_REDIS_ADDRS: several addresses need INVITEGATE_REDIS_CLUSTER=true (or INVITEGATE_REDIS_SENTINEL_MASTER, when they are Sentinels)")
	}
	if c.RedisNamespace == "" || strings.ContainsAny(c.RedisNamespace, "{}: ") {
		return fmt.Errorf("INVITEGATE_REDIS_NAMESPACE=%q: must be non-empty without braces, colons or spaces", c.RedisNamespace)
	}
	u, err := url.Parse(c.MongoURI)
	if err != nil || (u.Scheme != "mongodb" && u.Scheme != "mongodb+srv") {
		return errors.New("INVITEGATE_MONGO_URI: want a mongodb:// or mongodb+srv:// URI")
	}
	if c.MongoDB == "" || strings.ContainsAny(c.MongoDB, `/\. "$`) {
		return fmt.Errorf("INVITEGATE_MONGO_DB=%q: not a valid database name", c.MongoDB)
	}
	if c.Shards < 1 || c.Shards > 1024 {
		return fmt.Errorf("INVITEGATE_SHARDS=%d: must be 1..1024", c.Shards)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{
		{"INVITEGATE_REQUEST_TIMEOUT", c.RequestTimeout, time.Millisecond},
		{"INVITEGATE_UNKNOWN_CODE_TTL", c.UnknownCodeTTL, time.Millisecond},
		{"INVITEGATE_SHUTDOWN_GRACE", c.ShutdownGrace, 0},
		{"INVITEGATE_SHUTDOWN_TIMEOUT", c.ShutdownTimeout, time.Second},
		{"INVITEGATE_ACK_TIMEOUT", c.AckTimeout, time.Millisecond},
		{"INVITEGATE_RECONCILER_CLAIM_IDLE", c.ClaimIdle, 100 * time.Millisecond},
		{"INVITEGATE_HTTP_READ_TIMEOUT", c.ReadTimeout, 100 * time.Millisecond},
		{"INVITEGATE_HTTP_IDLE_TIMEOUT", c.IdleTimeout, time.Second},
	} {
		if d.v < d.min {
			return fmt.Errorf("%s=%s: must be at least %s", d.name, d.v, d.min)
		}
	}
	if c.Reserver != ReserverRedis && c.Reserver != ReserverMongo {
		return fmt.Errorf("INVITEGATE_RESERVER=%q: want redis or mongo", c.Reserver)
	}
	if c.Reserver == ReserverMongo && c.RateLimit != "" {
		return errors.New("INVITEGATE_RATE_LIMIT needs Redis: it cannot be used with INVITEGATE_RESERVER=mongo")
	}
	if c.Ack != AckRedis && c.Ack != AckReplica && c.Ack != AckMongo {
		return fmt.Errorf("INVITEGATE_ACK=%q: want redis, replica or mongo", c.Ack)
	}
	if c.Ack == AckReplica && c.Reserver == ReserverMongo {
		return errors.New("INVITEGATE_ACK=replica waits for Redis' replicas: it cannot be used with INVITEGATE_RESERVER=mongo")
	}
	if c.AckReplicas < 1 || c.AckReplicas > 16 {
		return fmt.Errorf("INVITEGATE_ACK_REPLICAS=%d: must be 1..16", c.AckReplicas)
	}
	if c.Ack == AckReplica && c.AckTimeout > maxReplicaAckTimeout {
		return fmt.Errorf("INVITEGATE_ACK_TIMEOUT=%s: with INVITEGATE_ACK=replica at most %s (a signup holds a Redis connection while it waits)", c.AckTimeout, maxReplicaAckTimeout)
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"INVITEGATE_MAX_IN_FLIGHT", c.MaxInFlight}, {"INVITEGATE_MAX_CONNS", c.MaxConns}, {"INVITEGATE_RATE_BURST", c.RateBurst}} {
		if n.v < 0 {
			return fmt.Errorf("%s=%d: must not be negative", n.name, n.v)
		}
	}
	if _, err := c.Limit(); err != nil {
		return err
	}
	if _, err := c.TrustedPrefixes(); err != nil {
		return err
	}
	for _, o := range c.CORSOrigins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("INVITEGATE_CORS_ORIGINS: %q: want an origin such as https://our-super-game.io (scheme and host, no path)", o)
		}
	}
	if c.SMTPAddr != "" {
		if _, err := mail.NewSMTP(c.SMTP()); err != nil {
			return fmt.Errorf("INVITEGATE_SMTP_ADDR, _TLS or INVITEGATE_MAIL_FROM: %w", err)
		}
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("INVITEGATE_PUBLIC_URL=%q: want an absolute http(s) address such as https://beta.our-super-game.io (no query)", c.PublicURL)
		}
	}
	if c.ConfirmSecret != "" && len(c.ConfirmSecret) < confirm.MinSecretLen {
		return fmt.Errorf("INVITEGATE_CONFIRM_SECRET: want at least %d characters (e.g. `openssl rand -hex 32`)", confirm.MinSecretLen)
	}
	if c.MailAttempts < 1 || c.MailAttempts > 100 {
		return fmt.Errorf("INVITEGATE_MAIL_MAX_ATTEMPTS=%d: must be 1..100", c.MailAttempts)
	}
	if strings.TrimSpace(c.GameName) == "" || len(c.GameName) > 100 {
		return fmt.Errorf("INVITEGATE_GAME_NAME=%q: want 1..100 characters", c.GameName)
	}
	if c.ClientIPHeader == "" || strings.ContainsAny(c.ClientIPHeader, " :\r\n") {
		return fmt.Errorf("INVITEGATE_CLIENT_IP_HEADER=%q: not a header name", c.ClientIPHeader)
	}
	if _, err := logrus.ParseLevel(c.LogLevel); err != nil {
		return fmt.Errorf("INVITEGATE_LOG_LEVEL=%q: %w", c.LogLevel, err)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return fmt.Errorf("INVITEGATE_LOG_FORMAT=%q: want json or text", c.LogFormat)
	}
	return nil
}

// SMTP is the mail delivery configuration.
func (c Config) SMTP() mail.SMTPConfig {
	return mail.SMTPConfig{Addr: c.SMTPAddr, Username: c.SMTPUsername, Password: c.SMTPPassword, TLS: c.SMTPTLS, From: c.MailFrom}
}

// Limit parses INVITEGATE_RATE_LIMIT; the zero Limit means off. A bad
// value is an error naming the variable.
func (c Config) Limit() (redis_rate.Limit, error) {
	if c.RateLimit == "" {
		return redis_rate.Limit{}, nil
	}
	bad := fmt.Errorf("INVITEGATE_RATE_LIMIT=%q: want N/s, N/m or N/h with N ≥ 1", c.RateLimit)
	n, unit, ok := strings.Cut(c.RateLimit, "/")
	rate, err := strconv.Atoi(n)
	if !ok || err != nil || rate < 1 {
		return redis_rate.Limit{}, bad
	}
	periods := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}
	period, ok := periods[unit]
	if !ok {
		return redis_rate.Limit{}, bad
	}
	burst := c.RateBurst
	if burst == 0 {
		burst = rate
	}
	return redis_rate.Limit{Rate: rate, Period: period, Burst: burst}, nil
}

// TrustedPrefixes parses INVITEGATE_TRUSTED_PROXIES: IPs or CIDRs. A bad
// entry is an error naming the variable.
func (c Config) TrustedPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.TrustedProxies {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("INVITEGATE_TRUSTED_PROXIES: %q: want an IP or a CIDR", s)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Fields returns the configuration for the startup log line, secrets masked.
func (c Config) Fields() logrus.Fields {
	f := logrus.Fields{}
	for _, o := range settings {
		c := c
		f[o.env] = o.bind(&c).String()
	}
	if c.RedisPassword != "" {
		f["INVITEGATE_REDIS_PASSWORD"] = "***"
	}
	if c.SentinelPass != "" {
		f["INVITEGATE_REDIS_SENTINEL_PASSWORD"] = "***"
	}
	if c.SMTPPassword != "" {
		f["INVITEGATE_SMTP_PASSWORD"] = "***"
	}
	if c.ConfirmSecret != "" {
		f["INVITEGATE_CONFIRM_SECRET"] = "***"
	}
	f["INVITEGATE_MONGO_URI"] = maskURI(c.MongoURI)
	return f
}

// maskURI hides the password of a connection string.
func maskURI(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "***"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "***")
	}
	return u.String()
}
