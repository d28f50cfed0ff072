package app

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/confirm"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
)

// Confirmation holds' wiring: the tokens' sealer, the links in the
// confirmation emails, and the resend of an email on a repeat signup.

// resendGap is the least time between two confirmation emails of one hold.
const resendGap = time.Minute

// openConfirm makes the sealer: from INVITEGATE_CONFIRM_SECRET, or, when
// it is not set, from a secret generated once per deployment and kept in
// MongoDB's settings (every replica reads the same one). It refuses to
// start a process that would hold seats (or mail) for an invitation with
// a confirmation window without INVITEGATE_PUBLIC_URL: the links need it.
func (m *Main) openConfirm(ctx context.Context) error {
	cfg := m.Config
	secret := cfg.ConfirmSecret
	if secret == "" {
		s, err := m.Store.GeneratedConfirmSecret(ctx)
		if err != nil {
			return err
		}
		secret = s
	}
	s, err := confirm.New(secret)
	if err != nil {
		return err
	}
	m.sealer = s
	if cfg.PublicURL != "" {
		if cfg.ConfirmSecret == "" {
			m.Logger.Info("confirmation links are sealed with a secret generated for this deployment and kept in MongoDB's settings; set INVITEGATE_CONFIRM_SECRET to keep it out of the database")
		}
		return nil
	}
	invs, err := m.Store.Invitations(ctx)
	if err != nil {
		return err
	}
	for _, inv := range invs {
		if inv.ConfirmWindow > 0 {
			return fmt.Errorf("%w: invitation %s has a confirmation window: set INVITEGATE_PUBLIC_URL (the start of the links in the confirmation emails), or remove its window (invitectl set-confirm %s off)", invite.ErrMisconfigured, inv.Code, inv.Code)
		}
	}
	return nil
}

// confirmLink returns the link of h's confirmation email. Without
// INVITEGATE_PUBLIC_URL (an invitation given a window after this process
// started) there is none: the email waits, logged once a minute at most.
func (m *Main) confirmLink() func(persist.Hold) string {
	if m.sealer == nil {
		return nil
	}
	base := strings.TrimRight(m.Config.PublicURL, "/")
	return func(h persist.Hold) string {
		if base == "" {
			return ""
		}
		tok := m.sealer.Seal(confirm.Hold{Code: h.Invitation, HoldID: h.HoldID, Canonical: h.Canonical, Email: h.Email})
		return base + "/invitations/" + url.PathEscape(h.Invitation) + "/confirm?token=" + tok
	}
}

// resender asks MongoDB to send a hold's confirmation email again (at most
// once per resendGap, decided there for every replica), and remembers for
// a while the holds it asked for, so that a client repeating its signup
// in a loop costs MongoDB one write a minute, not one per request.
type resender struct {
	st  *persist.Store
	now func() time.Time
	log logrus.FieldLogger

	mu     sync.Mutex
	asked  map[string]time.Time // hold key -> when this process last asked
	sweepA time.Time
}

func (r *resender) resend(ctx context.Context, canonical, code, holdID string) {
	key := persist.HoldKey(canonical, holdID)
	now := r.now()
	r.mu.Lock()
	if now.Sub(r.sweepA) > resendGap {
		for k, t := range r.asked {
			if now.Sub(t) > resendGap {
				delete(r.asked, k)
			}
		}
		r.sweepA = now
	}
	if t, ok := r.asked[key]; ok && now.Sub(t) < resendGap {
		r.mu.Unlock()
		return
	}
	r.asked[key] = now
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := r.st.ResendHoldMail(ctx, key, now, resendGap); err != nil {
		r.log.WithError(err).WithField("code", code).Warn("could not ask for a confirmation email to be sent again")
	}
}
