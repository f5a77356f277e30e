package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agua-mail/agua/shield"
)

// ClusterFigures are what a node knows of its cluster ([cluster] redis),
// read at scrape time.
type ClusterFigures struct {
	Connected  bool   // Redis answers
	Alive      int    // nodes heard within their last heartbeats
	Stale      int    // nodes listed whose heartbeat stopped
	SharedBans int64  // bans in Redis
	Pending    int    // writes waiting for Redis
	Lost       uint64 // writes dropped because too many were waiting
}

var (
	clusterUpDesc = prometheus.NewDesc("agua_cluster_redis_up",
		"1 while this node reaches the cluster's Redis; 0 while it enforces with its local state alone.", nil, nil)
	clusterNodesDesc = prometheus.NewDesc("agua_cluster_nodes",
		"Nodes seen through their heartbeats, by state (alive, stale).", []string{"state"}, nil)
	clusterBansDesc    = prometheus.NewDesc("agua_cluster_shared_bans", "Bans held in Redis for every node.", nil, nil)
	clusterPendingDesc = prometheus.NewDesc("agua_cluster_pending_writes", "Writes waiting for Redis to come back.", nil, nil)
	clusterLostDesc    = prometheus.NewDesc("agua_cluster_lost_writes_total", "Writes dropped because too many waited for Redis.", nil, nil)
	clusterCountsDesc  = prometheus.NewDesc("agua_cluster_counted_events_total",
		"Behaviour events shared with the cluster's counters, by result (sent, dropped: counted on this node only).", []string{"result"}, nil)
	clusterCrossedDesc = prometheus.NewDesc("agua_cluster_threshold_bans_total",
		"Bans this node issued because the events of every node together crossed a threshold.", nil, nil)
)

// Cluster adds the cluster's metrics, read from fn at scrape time.
func (m *Metrics) Cluster(sh *shield.Shield, fn func() ClusterFigures) {
	m.reg.MustRegister(&clusterCollector{sh: sh, fn: fn})
}

type clusterCollector struct {
	sh *shield.Shield
	fn func() ClusterFigures
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{clusterUpDesc, clusterNodesDesc, clusterBansDesc, clusterPendingDesc, clusterLostDesc, clusterCountsDesc, clusterCrossedDesc} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.fn()
	up := 0.0
	if f.Connected {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(clusterUpDesc, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(clusterNodesDesc, prometheus.GaugeValue, float64(f.Alive), "alive")
	ch <- prometheus.MustNewConstMetric(clusterNodesDesc, prometheus.GaugeValue, float64(f.Stale), "stale")
	ch <- prometheus.MustNewConstMetric(clusterBansDesc, prometheus.GaugeValue, float64(f.SharedBans))
	ch <- prometheus.MustNewConstMetric(clusterPendingDesc, prometheus.GaugeValue, float64(f.Pending))
	ch <- prometheus.MustNewConstMetric(clusterLostDesc, prometheus.CounterValue, float64(f.Lost))
	cs := c.sh.Stats().Counters
	ch <- prometheus.MustNewConstMetric(clusterCountsDesc, prometheus.CounterValue, float64(cs.Sent), "sent")
	ch <- prometheus.MustNewConstMetric(clusterCountsDesc, prometheus.CounterValue, float64(cs.Dropped), "dropped")
	ch <- prometheus.MustNewConstMetric(clusterCrossedDesc, prometheus.CounterValue, float64(cs.Crossed))
}
