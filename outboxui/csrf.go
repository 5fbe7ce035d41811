package outboxui

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
)

// csrfCookie holds a random nonce per browser; a form carries the nonce
// signed with the handler's key, so a page of another site can neither
// read the cookie nor forge the field.
const (
	csrfCookie = "outboxui_csrf"
	csrfField  = "csrf"
)

// csrfToken returns the token the forms of r's page carry, setting the
// nonce cookie on w first if r has none.
func (h *handler) csrfToken(w http.ResponseWriter, r *http.Request) string {
	nonce := ""
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) >= 32 {
		nonce = c.Value
	} else {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		nonce = base64.RawURLEncoding.EncodeToString(b)
		// No Path: the cookie goes to the directory of the console's
		// pages, wherever it is mounted.
		http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: nonce, HttpOnly: true,
			SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	}
	return h.sign(nonce)
}

func (h *handler) sign(nonce string) string {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte("outboxui csrf\x00"))
	m.Write([]byte(nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// csrfValid reports whether the POST r carries the token of its cookie.
func (h *handler) csrfValid(r *http.Request) bool {
	c, err := r.Cookie(csrfCookie)
	if err != nil || len(c.Value) < 32 {
		return false
	}
	got := r.PostFormValue(csrfField)
	return got != "" && hmac.Equal([]byte(got), []byte(h.sign(c.Value)))
}
