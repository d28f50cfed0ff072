// Package app is invitegate's composition root: from a config.Config it
// builds the Redis and MongoDB clients, the reservation path, the
// reconciler, the mailer, the public API and the admin listener (probes,
// /metrics, pprof), and owns a process's life: the invitegate command line,
// startup (schema checks, seeding, retries while dependencies come up) and
// graceful shutdown. The settings themselves live in internal/config.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"golang.org/x/net/netutil"

	"github.com/invitegate/invitegate/internal/config"
	"github.com/invitegate/invitegate/internal/confirm"
	api "github.com/invitegate/invitegate/internal/http"
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
	signups    *workflow.Signups // the Redis path: Reserver, seeded on demand
	failover   *workflow.Failover
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
	sealer     *confirm.Sealer        // nil without INVITEGATE_CONFIRM_SECRET
	expirer    *workflow.Expirer
	ready      atomic.Bool
	draining   atomic.Bool // shutting down: answers close their connection
	depUp      *prometheus.GaugeVec
	remaining  *prometheus.GaugeVec
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
	m.registry.MustRegister(m.Store.Collectors()...)

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

	if m.Mode == Mail || m.Mode == Serve {
		if err := retry(ctx, log, "mongodb", m.openConfirm); err != nil {
			return err
		}
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
	rcfg := reserve.Config{
		Namespace: cfg.RedisNamespace,
		Shards:    cfg.Shards,
		Pipeline:  pipe,
		Now:       m.Now,
		Logger:    log,
		Metrics:   mets.reserve,
	}
	if cfg.Ack == config.AckReplica {
		rcfg.AckReplicas, rcfg.AckTimeout = cfg.AckReplicas, cfg.AckTimeout
	}
	m.Reserver = reserve.New(m.rdb, rcfg)
	// MongoDB's cap: writers of one code in several processes try seats
	// handed out by one counter in Redis first (persist.SeatHinter).
	m.Store.UseSeatHints(m.Reserver)
	m.failover = workflow.NewFailover(workflow.NewInvitations(m.Store, m.Reserver, m.Now), workflow.FailoverConfig{
		Logger: log, Metrics: mets.failover,
	})
	m.signups = workflow.NewSignups(m.Reserver, m.Store, workflow.SignupsConfig{
		UnknownTTL: cfg.UnknownCodeTTL, Stale: m.failover.Wake, Now: m.Now, Logger: log,
	})
	if err := retry(ctx, log, "redis seed", m.signups.SeedIfNeeded); err != nil {
		return err
	}
	warnIfEvicting(ctx, m.rdb, log)
	if cfg.Ack == config.AckReplica {
		warnIfFewReplicas(ctx, m.rdb, cfg.AckReplicas, log)
	}
	if err := retry(ctx, log, "redis scripts", m.Reserver.LoadScripts); err != nil {
		return err
	}
	// Every replica gives back the seats of holds past their deadline;
	// expire.lua settles each once.
	m.expirer = workflow.NewExpirer(m.Reserver, workflow.ExpirerConfig{Logger: log})
	if m.Mode == Reconcile || cfg.Reconciler {
		streams := reserve.New(m.rdbStreams, reserve.Config{
			Namespace: cfg.RedisNamespace, Shards: cfg.Shards, Now: m.Now, Logger: log,
		})
		host, _ := os.Hostname()
		rc := persist.ReconcilerConfig{
			Consumer:  fmt.Sprintf("%s-%d-%d", host, os.Getpid(), m.Now().UnixNano()),
			ClaimIdle: cfg.ClaimIdle,
			Now:       m.Now,
			Logger:    log,
			Metrics:   mets.persist,
		}
		// With ack=replica or mongo an entry a failover lost was never
		// acknowledged: not written (persist.ReconcilerConfig.DropVanished).
		rc.DropVanished = cfg.Ack != config.AckRedis
		if cfg.Ack == config.AckMongo {
			// Signups wait on the group commit for up to AckTimeout, and
			// its insert may go on for its own timeout after that: the
			// reconciler leaves their entries to it meanwhile
			// (persist.ReconcilerConfig.Defer).
			rc.Defer = cfg.AckTimeout + persist.CommitWriteTimeout
		}
		m.reconciler = persist.NewReconciler(streams, m.Store, rc)
	}
	return nil
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
	if m.expirer != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = m.expirer.Run(recCtx)
		}()
	}
	wg.Add(1)
	healthCtx, stopHealth := context.WithCancel(context.Background())
	go func() {
		defer wg.Done()
		m.health(healthCtx)
	}()
	if m.failover != nil && m.public != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.failover.Watch(healthCtx)
		}()
	}

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
