// Package queuehttp puts the operator's queue commands on the admin API:
// Handler serves them from the queue the server owns, and Client is the
// same operations seen from the CLI, so `agua queue` works the same
// whether it opens an idle queue itself or asks the running server.
//
//	GET    /v1/queue              list, oldest first
//	GET    /v1/queue/stats        figures
//	GET    /v1/queue/{id}         one message
//	POST   /v1/queue/{id}/hold    keep it from delivery
//	POST   /v1/queue/{id}/release
//	POST   /v1/queue/{id}/retry   deferred recipients due now
//	POST   /v1/queue/retry-all    the same for every message
//	DELETE /v1/queue/{id}         remove it, no bounce
package queuehttp

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/agua-mail/agua/internal/queue"
)

// Ops are the operator's queue operations.
type Ops interface {
	List() ([]queue.Message, error)
	Get(id string) (queue.Message, error)
	Hold(id string) error
	Release(id string) error
	Retry(id string, now time.Time) error
	Delete(id string) error
	Stats() queue.Stats
}

// Handler serves Ops under /v1/queue. Mount it at "/v1/queue" and
// "/v1/queue/".
func Handler(q Ops) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/queue", func(w http.ResponseWriter, r *http.Request) {
		l, err := q.List()
		reply(w, l, err)
	})
	mux.HandleFunc("GET /v1/queue/stats", func(w http.ResponseWriter, r *http.Request) {
		reply(w, q.Stats(), nil)
	})
	mux.HandleFunc("POST /v1/queue/retry-all", func(w http.ResponseWriter, r *http.Request) {
		n, err := RetryAll(q, time.Now())
		reply(w, map[string]int{"retried": n}, err)
	})
	mux.HandleFunc("GET /v1/queue/{id}", func(w http.ResponseWriter, r *http.Request) {
		m, err := q.Get(r.PathValue("id"))
		reply(w, m, err)
	})
	mux.HandleFunc("DELETE /v1/queue/{id}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, ok, q.Delete(r.PathValue("id")))
	})
	mux.HandleFunc("POST /v1/queue/{id}/{op}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		var err error
		switch r.PathValue("op") {
		case "hold":
			err = q.Hold(id)
		case "release":
			err = q.Release(id)
		case "retry":
			err = q.Retry(id, time.Now())
		default:
			http.NotFound(w, r)
			return
		}
		reply(w, ok, err)
	})
	return mux
}

var ok = map[string]string{"result": "ok"}

// RetryAll makes every deferred recipient due at now.
func RetryAll(q Ops, now time.Time) (int, error) {
	l, err := q.List()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range l {
		if err := q.Retry(m.ID, now); err == nil {
			n++
		} else if !errors.Is(err, queue.ErrNotFound) {
			return n, err
		}
	}
	return n, nil
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, queue.ErrNotFound):
			code = http.StatusNotFound
		case errors.Is(err, queue.ErrBadID):
			code = http.StatusBadRequest
		}
		w.WriteHeader(code)
		// The admin client shows "error" as the message.
		json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	json.NewEncoder(w).Encode(v)
}

// DoFunc sends an admin API request (admin.Client.Do).
type DoFunc func(method, path string, body, out any) error

// Client implements Ops over the admin API.
type Client struct{ Do DoFunc }

// do is c.Do with the answers of Handler's own errors made the queue's
// sentinels again (404 ErrNotFound, 400 ErrBadID), so that callers match
// them with errors.Is as they do on a local queue.
func (c Client) do(method, path string, body, out any) error {
	err := c.Do(method, path, body, out)
	var st interface{ HTTPStatus() int }
	if errors.As(err, &st) {
		switch st.HTTPStatus() {
		case http.StatusNotFound:
			return queue.ErrNotFound
		case http.StatusBadRequest:
			return queue.ErrBadID
		}
	}
	return err
}

func (c Client) List() ([]queue.Message, error) {
	var l []queue.Message
	return l, c.do("GET", "/v1/queue", nil, &l)
}

func (c Client) Get(id string) (queue.Message, error) {
	var m queue.Message
	return m, c.do("GET", "/v1/queue/"+url.PathEscape(id), nil, &m)
}

func (c Client) Hold(id string) error {
	return c.do("POST", "/v1/queue/"+url.PathEscape(id)+"/hold", nil, nil)
}
func (c Client) Release(id string) error {
	return c.do("POST", "/v1/queue/"+url.PathEscape(id)+"/release", nil, nil)
}
func (c Client) Delete(id string) error {
	return c.do("DELETE", "/v1/queue/"+url.PathEscape(id), nil, nil)
}

// Retry asks the server; its clock decides "now".
func (c Client) Retry(id string, _ time.Time) error {
	return c.do("POST", "/v1/queue/"+url.PathEscape(id)+"/retry", nil, nil)
}

// RetryAllRemote asks the server to retry every message.
func (c Client) RetryAllRemote() (int, error) {
	var out map[string]int
	err := c.Do("POST", "/v1/queue/retry-all", nil, &out)
	return out["retried"], err
}

// Stats returns zero figures when the server cannot be asked; List tells
// the error.
func (c Client) Stats() queue.Stats {
	var s queue.Stats
	c.Do("GET", "/v1/queue/stats", nil, &s)
	return s
}
