package testenv

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-smtp"
)

// SMTPServer is an in-process SMTP server (github.com/emersion/go-smtp)
// that keeps what it receives and refuses deliveries while Fail says so.
type SMTPServer struct {
	Addr string
	// Fail refuses this many more deliveries with a 451 that quotes the
	// recipient, as real servers do; -1 refuses all.
	Fail atomic.Int64
	// FailCode is the reply code of refused deliveries (0: 451, temporary).
	FailCode atomic.Int64
	// DropAfterData cuts the connection right after accepting a message,
	// before the client's next command (go-mail's RSET) is answered: the
	// message is delivered, yet the client sees an error.
	DropAfterData atomic.Bool
	// DropAtRcpt cuts this many more connections at RCPT, before any
	// reply: the client sees a network error, not an SMTP refusal.
	DropAtRcpt atomic.Int64

	mu  sync.Mutex
	got []SMTPMessage
}

// SMTPMessage is one delivery the server accepted.
type SMTPMessage struct {
	From, To string
	Data     []byte
}

// StartSMTP starts an SMTPServer on a free loopback port, closed when the
// test ends.
func StartSMTP(tb testing.TB) *SMTPServer {
	tb.Helper()
	s := &SMTPServer{}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &smtpSession{srv: s, conn: c}, nil }))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return s
}

// Messages returns the deliveries accepted so far.
func (s *SMTPServer) Messages() []SMTPMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SMTPMessage(nil), s.got...)
}

type smtpSession struct {
	srv       *SMTPServer
	conn      *smtp.Conn
	from, to  string
	delivered bool
}

func (x *smtpSession) Reset() {
	if x.delivered && x.srv.DropAfterData.Load() {
		_ = x.conn.Conn().Close()
	}
	x.delivered = false
}
func (x *smtpSession) Logout() error { return nil }
func (x *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	x.from = from
	return nil
}
func (x *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if x.srv.DropAtRcpt.Load() > 0 && x.srv.DropAtRcpt.Add(-1) >= 0 {
		_ = x.conn.Conn().Close()
		return io.ErrUnexpectedEOF
	}
	x.to = to
	return nil
}
func (x *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if n := x.srv.Fail.Load(); n != 0 {
		if n > 0 {
			x.srv.Fail.Add(-1)
		}
		code := int(x.srv.FailCode.Load())
		if code == 0 {
			code = 451
		}
		return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 3, 0}, Message: "refused for " + x.to}
	}
	x.srv.mu.Lock()
	x.srv.got = append(x.srv.got, SMTPMessage{From: x.from, To: x.to, Data: b})
	x.srv.mu.Unlock()
	x.delivered = true
	return nil
}
