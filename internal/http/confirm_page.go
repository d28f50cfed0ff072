package http

import (
	"bytes"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/invitegate/invitegate/internal/invite"
)

// The confirm page: the link in a confirmation email opens it, and its one
// button posts the link's token to POST /invitations/{code}/confirm
// (web/confirm.js). Mail scanners and link previews open such links before
// the person does, so opening the page must change nothing: it is made
// from the URL alone and never asks a Reserver or the StatusFunc.

var confirmJS = mustRead("web/confirm.js")

// maxPageToken bounds the token the page carries; tokens are a few hundred
// characters, and a longer one cannot be valid.
const maxPageToken = 2048

type confirmData struct {
	Game, Code, Token string
}

// confirmPage serves GET /invitations/{code}/confirm?token=...: the page
// with the button (200), the page saying the link is incomplete (400: no
// token, an empty one or one too long to be a token), or the not-found
// page for a string that cannot be a code (404). A well-formed code is not
// looked up: the POST answers for an unknown one.
func (a *API) confirmPage(c *gin.Context) {
	start := a.cfg.Now()
	code := c.Param("code")
	data := confirmData{Game: a.cfg.GameName, Code: code, Token: c.Query("token")}
	name, status, outcome := "confirm.html", http.StatusOK, "confirm_page"
	switch {
	case !invite.ValidCode(code):
		name, status, outcome = "notfound.html", http.StatusNotFound, "confirm_page_unknown"
		data = confirmData{Game: a.cfg.GameName} // not echoed: it cannot be anyone's code
	case data.Token == "" || len(data.Token) > maxPageToken:
		status, outcome, data.Token = http.StatusBadRequest, "confirm_page_incomplete", ""
	}
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		a.fail(c, "confirm_page", start, err)
		return
	}
	for k, v := range pageHeaders {
		c.Header(k, v)
	}
	c.Header("Cache-Control", "no-cache")
	c.Data(status, "text/html; charset=utf-8", buf.Bytes())
	a.m.observe("confirm_page", status, outcome, a.cfg.Now().Sub(start))
}
