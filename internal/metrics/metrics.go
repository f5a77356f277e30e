// Package metrics exposes agua's Prometheus metrics (prometheus/client_golang):
// connections by listener and outcome, active sessions, authentications
// (and logins abandoned by their clients while they waited), messages and bytes, delivery latency, the fair delivery queue, bans, rule
// reloads and lockdown; and
// the outbound side (outbound.go): queue size, held and oldest, deliveries by
// result and destination, delivery latency, suspended accounts, limit hits.
// Shield figures are read from shield.Stats at scrape time, so the accept
// path pays nothing for them.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agua-mail/agua/shield"
)

// Metrics holds the registry and the counters protocol servers update.
type Metrics struct {
	reg             *prometheus.Registry
	auth            *prometheus.CounterVec
	messages        *prometheus.CounterVec
	messageBytes    *prometheus.CounterVec
	deliveryLatency prometheus.Histogram
	out             *outboundMetrics // WatchOutbound
}

// New registers agua's metrics. sessions reports active protocol sessions
// by listener name.
func New(sh *shield.Shield, sessions func() map[string]int64) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.auth = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agua_auth_total", Help: "Authentication attempts by listener and result (success, failure).",
	}, []string{"listener", "result"})
	m.messages = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agua_messages_total", Help: "Messages after DATA by listener and result (accepted, rejected) and reply class.",
	}, []string{"listener", "result", "code"})
	m.messageBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agua_message_bytes_total", Help: "Bytes of accepted messages by listener.",
	}, []string{"listener"})
	m.deliveryLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "agua_delivery_seconds",
		Help:    "Time from the end of DATA until the message is durable on disk (group commit included).",
		Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5},
	})
	m.reg.MustRegister(m.auth, m.messages, m.messageBytes, m.deliveryLatency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&shieldCollector{sh: sh, sessions: sessions})
	return m
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Auth counts one authentication attempt.
func (m *Metrics) Auth(listener string, ok bool) {
	r := "failure"
	if ok {
		r = "success"
	}
	m.auth.WithLabelValues(listener, r).Inc()
}

// Delivered counts an accepted message.
func (m *Metrics) Delivered(listener string, size int64, took time.Duration) {
	m.messages.WithLabelValues(listener, "accepted", "250").Inc()
	m.messageBytes.WithLabelValues(listener).Add(float64(size))
	m.deliveryLatency.Observe(took.Seconds())
}

// DeliveryQueue exports the fair delivery queue's figures (shield.Gate, in
// front of making accepted mail durable), read at scrape time.
func (m *Metrics) DeliveryQueue(stats func() shield.GateStats) {
	m.reg.MustRegister(&gateCollector{stats: stats})
}

var (
	gateWaitingDesc = prometheus.NewDesc("agua_delivery_queue_waiting", "Messages waiting for a delivery slot now.", nil, nil)
	gateBusyDesc    = prometheus.NewDesc("agua_delivery_queue_busy", "Delivery slots in use now (of smtp.delivery_slots).", nil, nil)
	gateGrantedDesc = prometheus.NewDesc("agua_delivery_queue_granted_total",
		"Delivery slots granted by sender class: first (known-good, authenticated, allowlisted), stranger, or repeat (a further message of an unauthenticated session).", []string{"class"}, nil)
	gateWaitedDesc = prometheus.NewDesc("agua_delivery_queue_waited_total", "Delivery slots granted after a wait.", nil, nil)
)

type gateCollector struct{ stats func() shield.GateStats }

func (c *gateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{gateWaitingDesc, gateBusyDesc, gateGrantedDesc, gateWaitedDesc} {
		ch <- d
	}
}

func (c *gateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	ch <- prometheus.MustNewConstMetric(gateWaitingDesc, prometheus.GaugeValue, float64(st.Waiting))
	ch <- prometheus.MustNewConstMetric(gateBusyDesc, prometheus.GaugeValue, float64(st.Busy))
	ch <- prometheus.MustNewConstMetric(gateGrantedDesc, prometheus.CounterValue, float64(st.GrantedFirst), "first")
	ch <- prometheus.MustNewConstMetric(gateGrantedDesc, prometheus.CounterValue, float64(st.GrantedRest), "stranger")
	ch <- prometheus.MustNewConstMetric(gateGrantedDesc, prometheus.CounterValue, float64(st.GrantedRep), "repeat")
	ch <- prometheus.MustNewConstMetric(gateWaitedDesc, prometheus.CounterValue, float64(st.Waited))
}

// AbandonedLogins exports the logins whose client left while the password
// check waited for the hasher (by listener name, read at scrape time):
// they cost no verification and count as no failure in agua_auth_total.
func (m *Metrics) AbandonedLogins(counts func() map[string]int64) {
	m.reg.MustRegister(&abandonedCollector{counts: counts})
}

var abandonedDesc = prometheus.NewDesc("agua_auth_abandoned_total",
	"Logins whose client left while the password check waited for the hasher, by listener: no verification ran and no failure was counted.", []string{"listener"}, nil)

type abandonedCollector struct{ counts func() map[string]int64 }

func (c *abandonedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- abandonedDesc }

func (c *abandonedCollector) Collect(ch chan<- prometheus.Metric) {
	for l, n := range c.counts() {
		ch <- prometheus.MustNewConstMetric(abandonedDesc, prometheus.CounterValue, float64(n), l)
	}
}

// Refused counts a message refused after DATA.
func (m *Metrics) Refused(listener string, code int) {
	m.messages.WithLabelValues(listener, "rejected", strconv.Itoa(code)).Inc()
}

var (
	connDesc = prometheus.NewDesc("agua_connections_total",
		"Connections by listener and shield outcome (served, rejected, dropped, tarpitted, evicted).", []string{"listener", "outcome"}, nil)
	activeDesc = prometheus.NewDesc("agua_connections_active",
		"Connections open now, by listener.", []string{"listener"}, nil)
	sessionsDesc = prometheus.NewDesc("agua_sessions_active",
		"Protocol sessions running now, by listener.", []string{"listener"}, nil)
	bansActiveDesc = prometheus.NewDesc("agua_bans_active", "Bans in force.", nil, nil)
	bansIssuedDesc = prometheus.NewDesc("agua_bans_issued_total", "Bans issued by reason.", []string{"reason"}, nil)
	reloadsDesc    = prometheus.NewDesc("agua_rule_reloads_total", "Rule reloads by result (ok, failed).", []string{"result"}, nil)
	lockdownDesc   = prometheus.NewDesc("agua_lockdown", "1 while lockdown is on.", nil, nil)
	tarpitDesc     = prometheus.NewDesc("agua_tarpit_held", "Connections held in the tarpit now.", nil, nil)
	rulesDesc      = prometheus.NewDesc("agua_shield_rules", "Rules in force.", nil, nil)
	kernelPktDesc  = prometheus.NewDesc("agua_shield_kernel_dropped_packets_total", "Packets the kernel dropped for the shield ([shield.kernel]).", nil, nil)
	kernelByteDesc = prometheus.NewDesc("agua_shield_kernel_dropped_bytes_total", "Bytes the kernel dropped for the shield ([shield.kernel]).", nil, nil)
	kernelElDesc   = prometheus.NewDesc("agua_shield_kernel_prefixes", "Prefixes mirrored into the kernel's drop sets ([shield.kernel]).", nil, nil)
)

// shieldCollector turns a shield.Stats snapshot into metrics at scrape time.
type shieldCollector struct {
	sh       *shield.Shield
	sessions func() map[string]int64
}

func (c *shieldCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{connDesc, activeDesc, sessionsDesc, bansActiveDesc, bansIssuedDesc, reloadsDesc, lockdownDesc, tarpitDesc, rulesDesc, kernelPktDesc, kernelByteDesc, kernelElDesc} {
		ch <- d
	}
}

func (c *shieldCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.sh.Stats()
	for name, l := range st.Listeners {
		for outcome, v := range map[string]uint64{"served": l.Accepted, "rejected": l.Rejected, "dropped": l.Dropped, "tarpitted": l.Tarpitted, "evicted": l.Evicted} {
			ch <- prometheus.MustNewConstMetric(connDesc, prometheus.CounterValue, float64(v), name, outcome)
		}
		ch <- prometheus.MustNewConstMetric(activeDesc, prometheus.GaugeValue, float64(l.Active), name)
	}
	if c.sessions != nil {
		for name, n := range c.sessions() {
			ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(n), name)
		}
	}
	ch <- prometheus.MustNewConstMetric(bansActiveDesc, prometheus.GaugeValue, float64(st.BansActive))
	for reason, v := range st.BansIssued {
		ch <- prometheus.MustNewConstMetric(bansIssuedDesc, prometheus.CounterValue, float64(v), reason)
	}
	ch <- prometheus.MustNewConstMetric(reloadsDesc, prometheus.CounterValue, float64(st.ReloadsOK), "ok")
	ch <- prometheus.MustNewConstMetric(reloadsDesc, prometheus.CounterValue, float64(st.ReloadsFailed), "failed")
	lock := 0.0
	if st.Lockdown {
		lock = 1
	}
	ch <- prometheus.MustNewConstMetric(lockdownDesc, prometheus.GaugeValue, lock)
	ch <- prometheus.MustNewConstMetric(tarpitDesc, prometheus.GaugeValue, float64(st.TarpitHeld))
	ch <- prometheus.MustNewConstMetric(rulesDesc, prometheus.GaugeValue, float64(st.Rules))
	if st.Kernel.Enabled {
		ch <- prometheus.MustNewConstMetric(kernelPktDesc, prometheus.CounterValue, float64(st.Kernel.Packets))
		ch <- prometheus.MustNewConstMetric(kernelByteDesc, prometheus.CounterValue, float64(st.Kernel.Bytes))
		ch <- prometheus.MustNewConstMetric(kernelElDesc, prometheus.GaugeValue, float64(st.Kernel.Elements))
	}
}
