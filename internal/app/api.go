package app

import (
	"time"

	"github.com/invitegate/invitegate/internal/config"
	"github.com/invitegate/invitegate/internal/email"
	api "github.com/invitegate/invitegate/internal/http"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/workflow"
)

type apiSetup struct {
	api.Config
	res api.Reserver
}

// apiConfig builds the public API's configuration and reserver from the
// process Config: acknowledgement mode, abuse limits, blocked domains.
func (m *Main) apiConfig(mets metrics) (apiSetup, error) {
	cfg := m.Config
	var res api.Reserver = m.signups
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
		out.Status = m.signups.Status
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
	if cfg.Ack == config.AckReplica {
		// The replicas' WAIT comes on top of the Redis work.
		out.Timeout += cfg.AckTimeout
	}
	if m.mongoRes == nil {
		// Confirmation holds: the Redis path only.
		out.Confirmer, out.Tokens = m.signups, m.sealer
		rs := &resender{st: m.Store, now: m.Now, log: m.Logger, asked: map[string]time.Time{}}
		out.Resend = rs.resend
	}
	if cfg.Ack == config.AckMongo && m.mongoRes == nil {
		m.committer = persist.NewCommitter(m.Store, persist.CommitterConfig{Batches: mets.persist.AckBatch})
		ack := workflow.NewMongoAck(m.signups, m.Store, m.committer, cfg.AckTimeout, m.Now)
		out.res, out.Confirmer = ack, ack
		// The MongoDB wait comes on top of the Redis work.
		out.Timeout += cfg.AckTimeout
	}
	return out, nil
}
