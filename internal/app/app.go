// Package app wires invitegate's processes from a Config: Redis and MongoDB
// clients, the reservation layer, the reconciler, the public API and the
// admin listener, with startup seeding and graceful shutdown.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	netmail "net/mail"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"golang.org/x/net/netutil"

	"github.com/invitegate/invitegate/internal/config"
	"github.com/invitegate/invitegate/internal/email"
	api "github.com/invitegate/invitegate/internal/http"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/mail"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/workflow"
)

// Mode selects what a Main runs.
type Mode int

const (
	// Serve runs the public API, and the reconciler unless disabled.
	Serve Mode = iota
	// Reconcile runs only the reconciler (and the admin listener).
	Reconcile
	// Mail runs only the mailer (and the admin listener).
	Mail
)

// Main is one invitegate process. Open connects and listens (tests bind
// ":0" and read the addresses), Run serves until its context ends.
type Main struct {
	Config config.Config
	Mode   Mode
	Logger *logrus.Logger
	Now    func() time.Time

	// Set by Open.
	PublicAddr string
	AdminAddr  string
	Reserver   *reserve.Reserver
	Store      *persist.Store

	registry   *prometheus.Registry
	rdb        redis.UniversalClient
	rdbStreams redis.UniversalClient
	mongo      *mongo.Client
	publicLn   net.Listener
	adminLn    net.Listener
	public     *http.Server
	admin      *http.Server
	reconciler *persist.Reconciler
	mailer     *mail.Mailer
	committer  *persist.Committer
	mongoRes   *persist.MongoReserver // INVITEGATE_RESERVER=mongo
	ready      atomic.Bool
	draining   atomic.Bool // shutting down: answers close their connection
	depUp      *prometheus.GaugeVec
	remaining  *prometheus.GaugeVec
}

// NewRedis returns a client for cfg: a cluster client with
// INVITEGATE_REDIS_CLUSTER, a single-node client otherwise. Every command
// has a deadline, so a dead Redis turns into errors, not hung requests: the
// earlier of the request's own (INVITEGATE_REQUEST_TIMEOUT) and 2s.
func NewRedis(cfg config.Config, poolSize int) redis.UniversalClient {
	if cfg.RedisCluster {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:        cfg.RedisAddrs,
			Password:     cfg.RedisPassword,
			DialTimeout:  2 * time.Second,
			ReadTimeout:  2 * time.Second,
			WriteTimeout: 2 * time.Second,
			PoolSize:     poolSize,
			// A hung node holds a request only until its deadline.
			ContextTimeoutEnabled: true,
		})
	}
	return redis.NewClient(&redis.Options{
		Addr:         cfg.RedisAddrs[0],
		Password:     cfg.RedisPassword,
		DialTimeout:  2 * time.Second,
		ReadTimeout:  2 * time.Second,
		WriteTimeout: 2 * time.Second,
		PoolSize:     poolSize,
		// A hung node holds a request only until its deadline.
		ContextTimeoutEnabled: true,
	})
}

// warnIfEvicting logs a warning for every Redis primary whose
// maxmemory-policy is not noeviction: evicting a claim or a bucket could
// admit an email twice or a code past max_uses. Redis' default is
// noeviction. Services that refuse CONFIG GET (many managed ones) are not
// judged.
func warnIfEvicting(ctx context.Context, rdb redis.UniversalClient, log logrus.FieldLogger) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	check := func(ctx context.Context, c *redis.Client) error {
		v, err := c.ConfigGet(ctx, "maxmemory-policy").Result()
		if err != nil {
			log.WithError(err).Debug("cannot read Redis' maxmemory-policy")
			return nil
		}
		if p, ok := v["maxmemory-policy"]; ok && p != "noeviction" {
			log.WithFields(logrus.Fields{"redis": c.Options().Addr, "maxmemory_policy": p}).
				Warn("Redis may evict keys when full (maxmemory-policy is not noeviction): an evicted claim or counter can admit an email twice or a code past max_uses; set maxmemory-policy noeviction")
		}
		return nil
	}
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		_ = c.ForEachMaster(ctx, check)
	case *redis.Client:
		_ = check(ctx, c)
	}
}

// openMailer builds the mailer when SMTP is configured; without it the
// emails wait as pending (invitegate mail refuses to start).
func (m *Main) openMailer(mets metrics) error {
	cfg := m.Config
	if cfg.SMTPAddr == "" {
		if m.Mode == Mail {
			return errors.New("invitegate mail needs INVITEGATE_SMTP_ADDR")
		}
		m.Logger.Warn("INVITEGATE_SMTP_ADDR is empty: no further-instructions email is sent; they wait as pending")
		return nil
	}
	send, err := mail.NewSMTP(cfg.SMTP())
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	m.mailer = mail.New(m.Store, send, mail.Config{
		Game:        cfg.GameName,
		Domain:      mailDomain(cfg.MailFrom),
		Owner:       fmt.Sprintf("%s-%d", host, os.Getpid()),
		MaxAttempts: cfg.MailAttempts,
		Now:         m.Now,
		Logger:      m.Logger,
		Metrics:     mets.mail,
	})
	return nil
}

// mailDomain is the domain of the sender's address, for Message-IDs.
func mailDomain(from string) string {
	if a, err := netmail.ParseAddress(from); err == nil {
		if at := strings.LastIndexByte(a.Address, '@'); at >= 0 {
			return a.Address[at+1:]
		}
	}
	return ""
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

// Open connects to Redis and MongoDB, checks the deployment, seeds Redis if
// it needs it, and binds the listeners. It does not serve yet.
func (m *Main) Open(ctx context.Context) error {
	cfg := m.Config
	if m.Logger == nil {
		m.Logger = NewLogger(cfg)
	}
	if m.Now == nil {
		m.Now = time.Now
	}
	log := m.Logger
	log.WithFields(cfg.Fields()).Info("starting invitegate")

	m.registry = prometheus.NewRegistry()
	mets := registerMetrics(m.registry)
	m.depUp, m.remaining = mets.depUp, mets.remaining

	mc, err := NewMongo(cfg)
	if err != nil {
		return err
	}
	m.mongo = mc
	m.Store = persist.NewStore(mc.Database(cfg.MongoDB), log, m.Now)

	if err := retry(ctx, log, "mongodb", func(ctx context.Context) error {
		if err := m.Store.EnsureSchema(ctx); err != nil {
			return err
		}
		if err := m.Store.CheckShards(ctx, cfg.Shards); err != nil {
			return err
		}
		if err := m.Store.CheckEmailRule(ctx, cfg.StripPlusAll); err != nil {
			return err
		}
		if _, err := m.Store.CheckReserver(ctx, cfg.Reserver); err != nil {
			return err
		}
		if cfg.Reserver != config.ReserverMongo {
			return nil
		}
		m.mongoRes = persist.NewMongoReserver(m.Store)
		if err := m.mongoRes.EnsureSchema(ctx); err != nil {
			return err
		}
		// Until every earlier registration holds a seat, the seat count
		// is too low and a code would admit past max_uses.
		return m.mongoRes.EnsureSeated(ctx)
	}); err != nil {
		return err
	}

	if m.Mode == Mail || (m.Mode == Serve && cfg.Mailer) {
		if err := m.openMailer(mets); err != nil {
			return err
		}
	}
	// The mailer needs MongoDB alone; so does the MongoDB-only path.
	switch {
	case m.mongoRes != nil && m.Mode == Reconcile:
		return errors.New("INVITEGATE_RESERVER=mongo writes signups to MongoDB directly: there is nothing to reconcile")
	case m.mongoRes == nil && m.Mode != Mail:
		if err := m.openRedis(ctx, mets); err != nil {
			return err
		}
	}

	if m.Mode == Serve {
		apiCfg, err := m.apiConfig(mets)
		if err != nil {
			return err
		}
		public := api.New(apiCfg.res, apiCfg.Config)
		m.public = &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if m.draining.Load() {
					// net/http closes the connection once this answer is
					// written, so balancers stop reusing it.
					w.Header().Set("Connection", "close")
				}
				public.ServeHTTP(w, r)
			}),
			// A slow client gets ReadTimeout for headers and body
			// together; the answer must be written within the request's
			// own deadline plus slack.
			ReadHeaderTimeout: cfg.ReadTimeout,
			ReadTimeout:       cfg.ReadTimeout,
			WriteTimeout:      cfg.ReadTimeout + apiCfg.Timeout + 5*time.Second,
			IdleTimeout:       cfg.IdleTimeout,
			MaxHeaderBytes:    16 << 10,
		}
		if m.publicLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
		}
		m.PublicAddr = m.publicLn.Addr().String()
		if cfg.MaxConns > 0 {
			// NOTE: one bound for all clients: a single address holding
			// thousands of idle keep-alive connections can fill it. Per-address
			// limits belong to the proxy in front (nginx limit_conn).
			m.publicLn = netutil.LimitListener(m.publicLn, cfg.MaxConns)
		}
	}

	m.admin = &http.Server{Handler: m.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
	if m.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
		return fmt.Errorf("listen %s: %w", cfg.AdminAddr, err)
	}
	m.AdminAddr = m.adminLn.Addr().String()
	return nil
}

// openRedis connects to Redis, seeds it if needed, loads the scripts and
// builds the reconciler (INVITEGATE_RESERVER=redis).
func (m *Main) openRedis(ctx context.Context, mets metrics) error {
	cfg, log := m.Config, m.Logger
	m.rdb = NewRedis(cfg, 0)
	var pipe reserve.Submitter
	if cfg.RedisPipeline {
		ap, err := autoPipeline(m.rdb, cfg.MaxInFlight)
		if err != nil {
			return fmt.Errorf("redis pipelining: %w", err)
		}
		pipe = ap
	}
	// Blocking stream reads hold a connection each: give them their own
	// pool so they never starve the hot path.
	m.rdbStreams = NewRedis(cfg, cfg.Shards+4)
	m.Reserver = reserve.New(m.rdb, m.Store, reserve.Config{
		Namespace:  cfg.RedisNamespace,
		Shards:     cfg.Shards,
		UnknownTTL: cfg.UnknownCodeTTL,
		Pipeline:   pipe,
		Now:        m.Now,
		Logger:     log,
		Metrics:    mets.reserve,
	})
	if err := retry(ctx, log, "redis seed", m.Reserver.SeedIfNeeded); err != nil {
		return err
	}
	warnIfEvicting(ctx, m.rdb, log)
	if err := retry(ctx, log, "redis scripts", m.Reserver.LoadScripts); err != nil {
		return err
	}
	if m.Mode == Reconcile || cfg.Reconciler {
		streams := reserve.New(m.rdbStreams, m.Store, reserve.Config{
			Namespace: cfg.RedisNamespace, Shards: cfg.Shards, Now: m.Now, Logger: log,
		})
		host, _ := os.Hostname()
		m.reconciler = persist.NewReconciler(streams, m.Store, persist.ReconcilerConfig{
			Consumer:  fmt.Sprintf("%s-%d-%d", host, os.Getpid(), m.Now().UnixNano()),
			ClaimIdle: cfg.ClaimIdle,
			Now:       m.Now,
			Logger:    log,
			Metrics:   mets.persist,
		})
	}
	return nil
}

type apiSetup struct {
	api.Config
	res api.Reserver
}

// apiConfig builds the public API's configuration and reserver from the
// process Config: acknowledgement mode, abuse limits, blocked domains.
func (m *Main) apiConfig(mets metrics) (apiSetup, error) {
	cfg := m.Config
	var res api.Reserver = m.Reserver
	if m.mongoRes != nil {
		res = m.mongoRes
	}
	out := apiSetup{res: res, Config: api.Config{
		Email:          email.Options{StripPlusAllDomains: cfg.StripPlusAll},
		Timeout:        cfg.RequestTimeout,
		MaxInFlight:    cfg.MaxInFlight,
		ClientIPHeader: cfg.ClientIPHeader,
		HideEmailTaken: cfg.HideEmailTaken,
		LandingPage:    cfg.LandingPage,
		GameName:       cfg.GameName,
		CORSOrigins:    cfg.CORSOrigins,
		Logger:         m.Logger,
		Metrics:        mets.http,
		Now:            m.Now,
	}}
	if m.mongoRes != nil {
		out.Status = m.mongoRes.Status
	} else {
		out.Status = m.Reserver.Status
	}
	proxies, err := cfg.TrustedPrefixes()
	if err != nil {
		return out, err
	}
	out.TrustedProxies = proxies
	limit, err := cfg.Limit()
	if err != nil {
		return out, err
	}
	if !limit.IsZero() {
		out.Limiter = newLimiter(m.rdb, cfg.RedisNamespace, limit)
	}
	if cfg.BlockedDomains != "" {
		blocked, err := loadBlockedDomains(cfg.BlockedDomains)
		if err != nil {
			return out, err
		}
		out.BlockedDomain = func(d string) bool { return blocked[d] }
		m.Logger.WithField("domains", len(blocked)).Info("refusing blocked email domains")
	}
	if cfg.Ack == config.AckMongo && m.mongoRes == nil {
		m.committer = persist.NewCommitter(m.Store, persist.CommitterConfig{Batches: mets.persist.AckBatch})
		out.res = workflow.NewMongoAck(m.Reserver, m.Store, m.committer, cfg.AckTimeout, m.Now)
		// The MongoDB wait comes on top of the Redis work.
		out.Timeout += cfg.AckTimeout
	}
	return out, nil
}

// retry runs fn (each call bounded by 10s) until it succeeds, once a
// second for up to 30s, so a process started just before its dependencies
// does not crash-loop. A misconfiguration is returned at once, as it is;
// any other failure is returned wrapped with what.
func retry(ctx context.Context, log logrus.FieldLogger, what string, fn func(context.Context) error) error {
	const every, bound = time.Second, 30 * time.Second
	var last error
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		last = fn(cctx)
		if errors.Is(last, invite.ErrMisconfigured) {
			return struct{}{}, backoff.Permanent(last)
		}
		return struct{}{}, last
	},
		backoff.WithBackOff(backoff.NewConstantBackOff(every)),
		// Retry stops when the next wait would end past the bound; one
		// more wait lets the last attempt start up to bound after the first.
		backoff.WithMaxElapsedTime(bound+every),
		backoff.WithNotify(func(err error, _ time.Duration) {
			log.WithError(err).Warnf("%s not ready; retrying", what)
		}))
	switch {
	case err == nil:
		return nil
	case errors.Is(last, invite.ErrMisconfigured):
		return last
	default:
		return fmt.Errorf("%s: %w", what, last)
	}
}

func (m *Main) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !m.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 500*time.Millisecond)
		defer cancel()
		if m.rdb == nil {
			// MongoDB alone takes the signups.
			if err := m.mongo.Ping(ctx, readpref.Primary()); err != nil {
				http.Error(w, "mongodb unreachable", http.StatusServiceUnavailable)
				return
			}
		} else if err := m.rdb.Ping(ctx).Err(); err != nil {
			http.Error(w, "redis unreachable", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry}))
	if m.Config.Pprof {
		// The admin listener only: profiles show code paths and timings,
		// never on the public port. No /cmdline: the arguments may hold
		// passwords.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Run serves until ctx is canceled, then shuts down: it turns not-ready,
// waits ShutdownGrace for balancers to notice, drains in-flight requests,
// lets the reconciler finish its batch, and returns within ShutdownTimeout.
func (m *Main) Run(ctx context.Context) error {
	log := m.Logger
	errc := make(chan error, 2)
	serve := func(srv *http.Server, ln net.Listener, name string) {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("%s server: %w", name, err)
		}
	}
	go serve(m.admin, m.adminLn, "admin")
	if m.public != nil {
		go serve(m.public, m.publicLn, "public")
	}

	recCtx, stopRec := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	if m.reconciler != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = m.reconciler.Run(recCtx)
		}()
	}
	if m.mailer != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = m.mailer.Run(recCtx)
		}()
	}
	wg.Add(1)
	healthCtx, stopHealth := context.WithCancel(context.Background())
	go func() {
		defer wg.Done()
		m.health(healthCtx)
	}()

	m.ready.Store(true)
	log.WithFields(logrus.Fields{"public": m.PublicAddr, "admin": m.AdminAddr}).Info("ready")

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
		log.WithError(runErr).Error("server failed; shutting down")
	}

	m.ready.Store(false)
	// From now on answers carry "Connection: close": balancers stop reusing
	// connections to this replica before Shutdown closes the idle ones under
	// them. Not SetKeepAlivesEnabled(false): it closes idle connections at
	// once, and one that a balancer has just sent a request on is closed
	// after net/http read the request but before it counts as active, so
	// the signup is taken and its answer lost (nginx then resends it and
	// the client gets 200 instead of 201).
	m.draining.Store(true)
	if runErr == nil && m.public != nil && m.Config.ShutdownGrace > 0 {
		time.Sleep(m.Config.ShutdownGrace)
	}
	sctx, cancel := context.WithTimeout(context.Background(), m.Config.ShutdownTimeout)
	defer cancel()
	if m.public != nil {
		if err := m.public.Shutdown(sctx); err != nil {
			log.WithError(err).Warn("public server did not drain in time")
		}
	}
	if m.committer != nil {
		m.committer.Close()
	}
	stopRec()
	stopHealth()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		log.Warn("reconciler did not finish its batch in time; it stays pending for another consumer")
	}
	_ = m.admin.Shutdown(sctx)
	m.Close()
	log.Info("stopped")
	return runErr
}

// Close releases the clients; Run calls it.
func (m *Main) Close() {
	if m.committer != nil {
		m.committer.Close()
	}
	if m.rdb != nil {
		_ = m.rdb.Close()
	}
	if m.rdbStreams != nil {
		_ = m.rdbStreams.Close()
	}
	if m.mongo != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = m.mongo.Disconnect(ctx)
	}
}

// health publishes invitegate_dependency_up every 2s and the remaining
// seats per code every 10s.
func (m *Main) health(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	var lastSeats time.Time
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		if m.rdb != nil {
			m.depUp.WithLabelValues("redis").Set(b2f(m.rdb.Ping(cctx).Err() == nil))
		}
		m.depUp.WithLabelValues("mongodb").Set(b2f(m.mongo.Ping(cctx, readpref.Primary()) == nil))
		cancel()
		if time.Since(lastSeats) >= 10*time.Second {
			lastSeats = time.Now()
			m.publishSeats(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// publishSeats sets invitegate_invitation_remaining for every code.
// NOTE: one HGET per code and shard; with thousands of codes this wants a
// pipeline or a sampled subset.
func (m *Main) publishSeats(ctx context.Context) {
	if m.Reserver == nil && m.mongoRes == nil {
		return // invitegate mail: no reservation path to ask
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	invs, err := m.Store.Invitations(ctx)
	if err != nil {
		return
	}
	seats := make(map[string]int, len(invs))
	for _, inv := range invs {
		if m.mongoRes != nil {
			taken, err := m.mongoRes.Taken(ctx, inv.Code)
			if err != nil {
				return
			}
			seats[inv.Code] = max(inv.MaxUses-taken, 0)
			continue
		}
		n, ok, err := m.Reserver.Remaining(ctx, inv.Code)
		if err != nil {
			return
		}
		if ok {
			seats[inv.Code] = n
		}
	}
	m.remaining.Reset()
	for code, n := range seats {
		m.remaining.WithLabelValues(code).Set(float64(n))
	}
}

// metrics are every collector a process exports.
type metrics struct {
	http      *api.Metrics
	mail      *mail.Metrics
	reserve   *reserve.Metrics
	persist   *persist.Metrics
	depUp     *prometheus.GaugeVec
	remaining *prometheus.GaugeVec
}

// registerMetrics creates and registers every collector with reg. It is
// the one list of what /metrics exports; MetricNames reads it too.
func registerMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		http:    api.NewMetrics(reg),
		mail:    mail.NewMetrics(reg),
		reserve: reserve.NewMetrics(reg),
		persist: persist.NewMetrics(reg),
		depUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "invitegate_dependency_up",
			Help: "1 when the last health check of a dependency (redis, mongodb) succeeded.",
		}, []string{"dependency"}),
		remaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "invitegate_invitation_remaining",
			Help: "Seats left per invitation code in Redis (codes are created by staff, so the label is bounded).",
		}, []string{"code"}),
	}
	reg.MustRegister(m.depUp, m.remaining, buildInfo(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// MetricNames returns the name of every metric family /metrics exports
// (histograms by their base name).
func MetricNames() []string {
	rec := &recorder{}
	registerMetrics(rec)
	return rec.names
}

// recorder is a Registerer that only notes metric names.
type recorder struct{ names []string }

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		// Desc has no name accessor; its String() is stable:
		// Desc{fqName: "name", help: ...}.
		s := d.String()
		if i := strings.Index(s, `fqName: "`); i >= 0 {
			rest := s[i+len(`fqName: "`):]
			r.names = append(r.names, rest[:strings.IndexByte(rest, '"')])
		}
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *recorder) Unregister(prometheus.Collector) bool { return false }

// buildInfo is invitegate_build_info{version, revision, goversion} = 1.
func buildInfo() prometheus.Collector {
	version, revision, goVersion := "(devel)", "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "invitegate_build_info",
		Help:        "Build of this process; always 1.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	})
	g.Set(1)
	return g
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
