package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/invitegate/invitegate/internal/email"
)

// mailbox is make run's mail catcher: an SMTP server on loopback
// (github.com/emersion/go-smtp) that saves every email the mailer sends as
// an .eml file under dir, which any mail program opens, and prints one line
// per email with the address masked.
type mailbox struct {
	addr string
	dir  string
	out  io.Writer
	mu   sync.Mutex // out
	n    atomic.Int64
	srv  *smtp.Server
}

func startMailbox(dir string, out io.Writer) (*mailbox, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mb := &mailbox{addr: ln.Addr().String(), dir: dir, out: out}
	mb.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &mailboxSession{mb: mb}, nil }))
	mb.srv.Domain = "localhost"
	go mb.srv.Serve(ln)
	return mb, nil
}

func (mb *mailbox) Close() { mb.srv.Close() }

type mailboxSession struct {
	mb *mailbox
	to string
}

func (s *mailboxSession) Reset()                                    {}
func (s *mailboxSession) Logout() error                             { return nil }
func (s *mailboxSession) Mail(string, *smtp.MailOptions) error      { return nil }
func (s *mailboxSession) Rcpt(to string, _ *smtp.RcptOptions) error { s.to = to; return nil }
func (s *mailboxSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	name := filepath.Join(s.mb.dir, fmt.Sprintf("%s-%04d.eml", time.Now().Format("20060102-150405"), s.mb.n.Add(1)))
	if err := os.WriteFile(name, b, 0o644); err != nil {
		return err
	}
	s.mb.mu.Lock()
	fmt.Fprintf(s.mb.out, "mail to %s saved as %s\n", email.Mask(s.to), name)
	if link := confirmLink(b); link != "" {
		fmt.Fprintf(s.mb.out, "  confirmation link: %s\n", link)
	}
	s.mb.mu.Unlock()
	return nil
}

// linkRE finds a confirmation link in a message whose quoted-printable
// soft line breaks and "=3D" were undone.
var linkRE = regexp.MustCompile(`https?://[^\s"<>]+/confirm\?token=[A-Za-z0-9_-]+`)

// confirmLink returns the first confirmation link of a message, or "".
func confirmLink(msg []byte) string {
	body := strings.ReplaceAll(strings.ReplaceAll(string(msg), "=\r\n", ""), "=3D", "=")
	return linkRE.FindString(body)
}
