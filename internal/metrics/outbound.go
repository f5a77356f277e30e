package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// OutboundSource is what the outbound metrics read at scrape time: the
// queue's figures and the sending limits' (internal/server wires them).
type OutboundSource interface {
	QueueFigures() QueueFigures
	SuspendedAccounts() int
	LimitHits() map[string]uint64 // by limit name
}

// QueueFigures are the queue's figures for the metrics.
type QueueFigures struct {
	Messages, Recipients, Held, Deferred int
	Bytes                                int64
	Oldest                               time.Time // zero when empty
}

// maxDomainLabels bounds the destination label of the deliveries counter:
// the first domains seen get their own value, later ones are "other".
const maxDomainLabels = 100

type outboundMetrics struct {
	deliveries *prometheus.CounterVec
	latency    prometheus.Histogram

	mu      sync.Mutex
	domains map[string]bool
}

var (
	queueMsgsDesc     = prometheus.NewDesc("agua_queue_messages", "Messages in the outbound queue.", nil, nil)
	queueRcptsDesc    = prometheus.NewDesc("agua_queue_recipients", "Recipients in the outbound queue not yet delivered or bounced.", nil, nil)
	queueDeferredDesc = prometheus.NewDesc("agua_queue_deferred_recipients", "Recipients waiting for a retry after a temporary failure.", nil, nil)
	queueHeldDesc     = prometheus.NewDesc("agua_queue_held_messages", "Messages held (by an operator, or of a suspended account).", nil, nil)
	queueBytesDesc    = prometheus.NewDesc("agua_queue_bytes", "Bytes of the messages in the outbound queue.", nil, nil)
	queueOldestDesc   = prometheus.NewDesc("agua_queue_oldest_seconds", "Age of the oldest message in the outbound queue (0 when empty).", nil, nil)
	suspendedDesc     = prometheus.NewDesc("agua_accounts_suspended", "Accounts whose sending is suspended.", nil, nil)
	limitHitsDesc     = prometheus.NewDesc("agua_send_limit_hits_total", "Sending limits reached on authenticated submission, by limit.", []string{"limit"}, nil)
)

// WatchOutbound registers the outbound metrics: the queue's figures and
// the sending limits', read from src at scrape time, and the delivery
// counters Attempt updates.
func (m *Metrics) WatchOutbound(src OutboundSource) {
	o := &outboundMetrics{domains: map[string]bool{}}
	o.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agua_outbound_deliveries_total",
		Help: "Delivery attempts per recipient by result (delivered, deferred, bounced) and destination domain (the first 100 domains seen; later ones are \"other\").",
	}, []string{"result", "domain"})
	o.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "agua_outbound_delivery_seconds",
		Help:    "Time from acceptance to delivery at the next hop, per delivered recipient.",
		Buckets: []float64{.1, .5, 1, 5, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 5 * 24 * 3600},
	})
	m.reg.MustRegister(o.deliveries, o.latency, &outboundCollector{src: src})
	m.out = o
}

// Attempt counts one delivery attempt for one recipient; took is the time
// since the message was accepted (observed for delivered recipients).
func (m *Metrics) Attempt(result, domain string, took time.Duration) {
	o := m.out
	if o == nil {
		return
	}
	o.mu.Lock()
	if !o.domains[domain] {
		if len(o.domains) < maxDomainLabels {
			o.domains[domain] = true
		} else {
			domain = "other"
		}
	}
	o.mu.Unlock()
	o.deliveries.WithLabelValues(result, domain).Inc()
	if result == "delivered" {
		o.latency.Observe(took.Seconds())
	}
}

type outboundCollector struct{ src OutboundSource }

func (c *outboundCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueMsgsDesc, queueRcptsDesc, queueDeferredDesc, queueHeldDesc, queueBytesDesc, queueOldestDesc, suspendedDesc, limitHitsDesc} {
		ch <- d
	}
}

func (c *outboundCollector) Collect(ch chan<- prometheus.Metric) {
	q := c.src.QueueFigures()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	gauge(queueMsgsDesc, float64(q.Messages))
	gauge(queueRcptsDesc, float64(q.Recipients))
	gauge(queueDeferredDesc, float64(q.Deferred))
	gauge(queueHeldDesc, float64(q.Held))
	gauge(queueBytesDesc, float64(q.Bytes))
	age := 0.0
	if !q.Oldest.IsZero() {
		age = time.Since(q.Oldest).Seconds()
	}
	gauge(queueOldestDesc, age)
	gauge(suspendedDesc, float64(c.src.SuspendedAccounts()))
	for l, n := range c.src.LimitHits() {
		ch <- prometheus.MustNewConstMetric(limitHitsDesc, prometheus.CounterValue, float64(n), l)
	}
}
