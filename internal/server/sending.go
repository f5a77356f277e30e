package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/agua-mail/agua/internal/accounts"
	"github.com/agua-mail/agua/internal/config"
	"github.com/agua-mail/agua/internal/metrics"
	"github.com/agua-mail/agua/internal/outbound"
	"github.com/agua-mail/agua/internal/queue"
	"github.com/agua-mail/agua/internal/router"
	"github.com/agua-mail/agua/internal/sendlimit"
	"github.com/agua-mail/agua/internal/smtpd"
)

// SendLimitFile is the sending limits' state: the first-time recipient
// record, recent counts and the suspended accounts.
func SendLimitFile(cfg config.Config) string { return filepath.Join(cfg.DataDir, "sendlimit.json") }

// SendLimits maps [outbound.limits] to the tracker's limits.
func SendLimits(cfg config.Config) sendlimit.Limits {
	l := cfg.Outbound.Limits
	return sendlimit.Limits{
		MessagesPerHour: l.MessagesPerHour, MessagesPerDay: l.MessagesPerDay,
		RcptsPerMessage: l.RecipientsPerMessage, NewRcptsPerDay: l.NewRecipientsPerDay,
		DomainMessagesPerHour: l.DomainMessagesPerHour, DomainMessagesPerDay: l.DomainMessagesPerDay,
		BounceRatio: l.BounceRatio, BounceMinSample: l.BounceMinSample,
		SuspendHits: l.SuspendAfterHits, SuspendWindow: l.SuspendWindow,
		SuspendNetworks: l.SuspendLoginNetworks, SuspendBounceRatio: l.SuspendBounceRatio,
		KnownRecipients: l.KnownRecipients, MaxAccounts: l.MaxAccounts,
	}
}

// openSendLimits opens the sending limits; an automatic suspension holds
// the account's queued mail, ends its submission sessions and alerts.
func (s *Server) openSendLimits() (err error) {
	s.limits, err = sendlimit.Open(SendLimits(s.cfg), sendlimit.Options{
		Path: SendLimitFile(s.cfg), Log: s.log,
		OnSuspend: func(sus sendlimit.Suspension) { s.afterSuspend(sus) },
	})
	if err != nil {
		return fmt.Errorf("sending limits: %w", err)
	}
	return nil
}

// routerLimits is the tracker as the router asks it.
type routerLimits struct{ t *sendlimit.Tracker }

func (l routerLimits) Begin(account string, now time.Time) (router.SendTx, error) {
	tx, err := l.t.Begin(account, now)
	if err != nil {
		return nil, err
	}
	return tx, nil
}

// afterSuspend carries out a suspension: the account's queued mail is held,
// its open submission sessions are ended, and, if configured, the
// postmaster gets a mail. (The tracker logged the alert line.) Reading
// mail (POP3, IMAP) is not touched.
func (s *Server) afterSuspend(sus sendlimit.Suspension) (held, ended int) {
	held, err := s.holdAccount(sus.Account, true)
	if err != nil {
		s.log.Error("suspension: holding the account's queued mail", "account", sus.Account, "err", err)
	}
	for _, srv := range s.smtp {
		ended += srv.EndSessions(sus.Account, "account sending suspended")
	}
	s.log.Info("suspension applied", "account", sus.Account, "held_messages", held, "sessions_ended", ended)
	if sus.By == "auto" && s.cfg.Outbound.Limits.NotifyPostmaster {
		if err := s.notifyPostmaster(sus, held); err != nil {
			s.log.Error("suspension: mail to the postmaster", "account", sus.Account, "err", err)
		}
	}
	return held, ended
}

// holdAccount holds (or releases) every queued message the account
// submitted, and returns how many changed.
func (s *Server) holdAccount(account string, hold bool) (int, error) {
	q := s.out.queue
	l, err := q.List()
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, m := range l {
		if !strings.EqualFold(m.Envelope.Account, account) || m.Held == hold {
			continue
		}
		op := q.Release
		if hold {
			op = q.Hold
		}
		switch err := op(m.ID); {
		case err == nil:
			n++
		case !errors.Is(err, queue.ErrNotFound): // delivered meanwhile
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// notifyPostmaster mails the postmaster of the server's domain (or of the
// first local domain) about an automatic suspension.
func (s *Server) notifyPostmaster(sus sendlimit.Suspension, held int) error {
	ctx := context.Background()
	users, err := s.dir.Resolve(ctx, "postmaster@"+s.cfg.Hostname)
	if err != nil {
		ds, derr := s.dir.ListDomains(ctx)
		if derr != nil || len(ds) == 0 {
			return errors.Join(err, derr)
		}
		if users, err = s.dir.Resolve(ctx, "postmaster@"+ds[0]); err != nil {
			return err
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: agua <MAILER-DAEMON@%s>\r\nTo: postmaster\r\nSubject: Sending suspended for %s\r\nDate: %s\r\n", s.cfg.Hostname, sus.Account, time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Auto-Submitted: auto-generated\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	fmt.Fprintf(&b, "The sending of %s was suspended at %s:\r\n  %s\r\n\r\n", sus.Account, sus.Since.Format(time.RFC3339), sus.Reason)
	fmt.Fprintf(&b, "%d queued message(s) of the account are held. Reading mail still works.\r\n", held)
	fmt.Fprintf(&b, "Check the account (change its password if it was compromised), then release it:\r\n  agua user unsuspend %s\r\n", sus.Account)
	env := router.Envelope{From: ""}
	for _, u := range users {
		env.Rcpts = append(env.Rcpts, router.Recipient{Address: u.Address, Quota: u.Quota})
	}
	return s.out.local.Deliver(ctx, env, bytes.NewReader(b.Bytes()), int64(b.Len()))
}

// loginSeen tells the sending limits of a submission login (logins from
// many networks suspend an account).
func (s *Server) loginSeen(ss *smtpd.Session, ok bool) {
	if !ok || ss.User == "" || ss.Mode == smtpd.ModeMX || ss.RemoteAddr == nil {
		return
	}
	if ap, err := netip.ParseAddrPort(ss.RemoteAddr.String()); err == nil {
		s.limits.Login(ss.User, ap.Addr(), time.Now())
	}
}

// observeDelivery counts an attempt in the metrics and gives the final
// outcome of a submitted message's recipient to the sending limits (the
// bounce ratio).
func (s *Server) observeDelivery(a outbound.Attempt) {
	s.metrics.Attempt(a.Status.String(), a.Destination, a.At.Sub(a.Envelope.Received))
	if a.Envelope.Account != "" && a.Status.Final() {
		s.limits.Outcome(a.Envelope.Account, a.Status == queue.Bounced, a.At)
	}
}

// outboundFigures is what the metrics read at scrape time.
type outboundFigures struct{ s *Server }

func (f outboundFigures) QueueFigures() metrics.QueueFigures {
	st := f.s.out.queue.Stats()
	return metrics.QueueFigures{Messages: st.Messages, Recipients: st.Recipients, Held: st.Held, Deferred: st.Deferred, Bytes: st.Bytes, Oldest: st.Oldest}
}

func (f outboundFigures) SuspendedAccounts() int { return len(f.s.limits.Suspended()) }

func (f outboundFigures) LimitHits() map[string]uint64 {
	out := map[string]uint64{}
	for l, n := range f.s.limits.Hits() {
		out[string(l)] = n
	}
	return out
}

// SuspensionInfo is a suspended account on the admin API, with how many of
// its messages the queue holds.
type SuspensionInfo struct {
	sendlimit.Suspension
	Held int `json:"held_messages"`
}

// SuspendRequest is the body of POST /v1/suspensions.
type SuspendRequest struct {
	Account string `json:"account"`
	Reason  string `json:"reason"`
}

// SuspendResult answers a suspend or unsuspend.
type SuspendResult struct {
	Result string `json:"result"`
	Held   int    `json:"held_messages"`     // held by the suspension
	Ended  int    `json:"sessions_ended"`    // submission sessions ended
	Freed  int    `json:"released_messages"` // released by the unsuspension
}

// suspensionsHandler serves the suspended accounts on the admin API:
//
//	GET    /v1/suspensions            the suspended accounts
//	POST   /v1/suspensions            suspend {account, reason}
//	DELETE /v1/suspensions/{account}  lift it and release the held mail
func (s *Server) suspensionsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/suspensions", func(w http.ResponseWriter, r *http.Request) {
		writeAPI(w, http.StatusOK, s.suspensions())
	})
	mux.HandleFunc("POST /v1/suspensions", func(w http.ResponseWriter, r *http.Request) {
		var req SuspendRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<14)).Decode(&req); err != nil {
			writeAPI(w, http.StatusBadRequest, map[string]string{"error": "bad request body: " + err.Error()})
			return
		}
		res, err := s.suspend(r.Context(), req.Account, req.Reason)
		if err != nil {
			writeAPI(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeAPI(w, http.StatusOK, res)
	})
	mux.HandleFunc("DELETE /v1/suspensions/{account}", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.unsuspend(r.PathValue("account"))
		switch {
		case errors.Is(err, errNotSuspended):
			writeAPI(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		case err != nil:
			writeAPI(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		default:
			writeAPI(w, http.StatusOK, res)
		}
	})
	return mux
}

func writeAPI(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

var errNotSuspended = errors.New("the account's sending is not suspended")

func (s *Server) suspensions() []SuspensionInfo {
	out := []SuspensionInfo{}
	sus := s.limits.Suspended()
	if len(sus) == 0 {
		return out // the dashboard asks every 2 s: no queue listing for nothing
	}
	held := map[string]int{}
	if l, err := s.out.queue.List(); err == nil {
		for _, m := range l {
			if m.Held && m.Envelope.Account != "" {
				held[strings.ToLower(m.Envelope.Account)]++
			}
		}
	}
	for _, x := range sus {
		out = append(out, SuspensionInfo{Suspension: x, Held: held[x.Account]})
	}
	return out
}

// suspend is the operator's suspension: an account of this server only.
func (s *Server) suspend(ctx context.Context, account, reason string) (SuspendResult, error) {
	account = strings.ToLower(strings.TrimSpace(account))
	if _, err := s.dir.Resolve(ctx, account); err != nil {
		if errors.Is(err, accounts.ErrNotLocal) || errors.Is(err, accounts.ErrNoSuchUser) || errors.Is(err, accounts.ErrInvalid) {
			return SuspendResult{}, fmt.Errorf("%s is not an account of this server", account)
		}
		return SuspendResult{}, err
	}
	changed, err := s.limits.Suspend(account, reason, time.Now())
	if err != nil {
		return SuspendResult{}, err
	}
	if !changed {
		return SuspendResult{Result: account + " was already suspended"}, nil
	}
	s.log.Warn("account sending suspended", "account", account, "reason", reason, "by", "operator")
	held, ended := s.afterSuspend(sendlimit.Suspension{Account: account, Reason: reason, By: "operator"})
	return SuspendResult{Result: fmt.Sprintf("sending of %s suspended; %d queued message(s) held, %d session(s) ended", account, held, ended), Held: held, Ended: ended}, nil
}

// unsuspend lifts a suspension and releases the account's held mail.
func (s *Server) unsuspend(account string) (SuspendResult, error) {
	account = strings.ToLower(strings.TrimSpace(account))
	changed, err := s.limits.Unsuspend(account)
	if err != nil {
		return SuspendResult{}, err
	}
	if !changed {
		return SuspendResult{}, fmt.Errorf("%s: %w", account, errNotSuspended)
	}
	freed, err := s.holdAccount(account, false)
	s.log.Warn("account sending unsuspended", "account", account, "released_messages", freed)
	if err != nil {
		return SuspendResult{}, fmt.Errorf("unsuspended, but releasing its mail failed: %w", err)
	}
	return SuspendResult{Result: fmt.Sprintf("sending of %s resumed; %d held message(s) released", account, freed), Freed: freed}, nil
}
