package app

import (
	"errors"
	"fmt"
	netmail "net/mail"
	"os"
	"strings"

	"github.com/invitegate/invitegate/internal/mail"
)

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
		ConfirmLink: m.confirmLink(),
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
